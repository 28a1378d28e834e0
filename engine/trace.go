package engine

import (
	"context"
	"encoding/json"
	"net/http"
	"unicode/utf8"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
	"github.com/streamgate/gateway/tracing"
)

// maxContentAttr bounds a captured prompt or completion in a span: a
// collector takes spans of bounded size, and an image part's data URL
// alone can be megabytes.
const maxContentAttr = 16 << 10

// traceRequest puts req's parameters on the request's span (the GenAI
// conventions' gen_ai.request.*), and its messages when the config
// captures content.
func (e *Engine) traceRequest(ctx context.Context, req *providers.Request) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	if req.MaxTokens > 0 {
		span.SetAttributes(tracing.MaxTokens.Int(req.MaxTokens))
	}
	if req.Temperature != nil {
		span.SetAttributes(tracing.Temperature.Float64(float64(*req.Temperature)))
	}
	if req.TopP != nil {
		span.SetAttributes(tracing.TopP.Float64(float64(*req.TopP)))
	}
	if !e.Config.Tracing.CaptureContent {
		return
	}
	msgs := make([]contentMessage, 0, len(req.Messages)+1)
	if req.Prompt != "" {
		msgs = append(msgs, textMessage("user", req.Prompt))
	}
	for _, m := range req.Messages {
		cm := contentMessage{Role: m.Role}
		if m.Content != "" {
			cm.Parts = append(cm.Parts, contentPart{Type: "text", Content: m.Content})
		}
		for _, p := range m.Parts {
			if p.Type == "text" {
				cm.Parts = append(cm.Parts, contentPart{Type: "text", Content: p.Text})
			}
		}
		msgs = append(msgs, cm)
	}
	span.SetAttributes(tracing.InputMessages.String(e.contentAttr(msgs)))
}

// traceAnswer puts a complete answer that was not streamed on the
// request's span, when the config captures content. (A streamed answer
// is not kept anywhere to put there: doing so would be work per token.)
func (e *Engine) traceAnswer(ctx context.Context, ans *relay.Answer) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() || !e.Config.Tracing.CaptureContent {
		return
	}
	span.SetAttributes(tracing.OutputMessages.String(e.contentAttr([]contentMessage{textMessage("assistant", ans.Content)})))
}

// contentMessage and contentPart are the GenAI conventions' shape of
// gen_ai.input.messages and gen_ai.output.messages, text parts only.
type contentMessage struct {
	Role  string        `json:"role"`
	Parts []contentPart `json:"parts"`
}

type contentPart struct {
	Type    string `json:"type"`
	Content string `json:"content"`
}

func textMessage(role, text string) contentMessage {
	return contentMessage{Role: role, Parts: []contentPart{{Type: "text", Content: text}}}
}

// contentAttr is msgs as an attribute's value: JSON, redacted of the
// configured secrets, cut at maxContentAttr.
func (e *Engine) contentAttr(msgs []contentMessage) string {
	b, _ := json.Marshal(msgs) // strings only: cannot fail
	s := e.Redact(string(b))
	if len(s) > maxContentAttr {
		cut := maxContentAttr
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// endAdmission ends the admission span with its verdict.
func endAdmission(span trace.Span, fe *failure.Error) {
	if span.IsRecording() {
		span.SetAttributes(tracing.Admitted.Bool(fe == nil))
		if fe != nil {
			span.SetAttributes(tracing.ErrorCode.String(fe.Code), tracing.ErrorType.String(fe.Code))
			span.SetStatus(codes.Error, fe.Code)
		}
	}
	span.End()
}

// endRelay ends the relay span with how the stream ended; all, for a
// generation that may outlive its request's span, puts every attribute
// of the request on it.
func endRelay(span trace.Span, info *middleware.Info, all bool) {
	if span.IsRecording() {
		if all {
			span.SetAttributes(info.SpanAttributes()...)
		} else {
			span.SetAttributes(tracing.End.String(info.End.String()))
			if info.ErrorCode != "" {
				span.SetAttributes(tracing.ErrorCode.String(info.ErrorCode), tracing.ErrorType.String(info.ErrorCode))
			}
		}
		if info.SpanError(http.StatusOK) {
			span.SetStatus(codes.Error, info.ErrorCode)
		}
	}
	span.End()
}
