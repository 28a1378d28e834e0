package middleware

import (
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/tracing"
)

// Trace gives every request a server span from tracer, continuing the
// caller's trace when the request carries a W3C traceparent, and puts it
// in the request's context, under which the engine adds its children.
// The span starts when the request arrived (Info.Start: it goes after
// AccessLog) and ends with what the handlers recorded in Info: the
// GenAI attributes, tokens, time to first token, ending and error code.
// The URL's query is left out (a resume token travels in it), as is
// every header. Routes in skip (probes, metrics: polled every few
// seconds, they would drown the traces worth reading) get no span.
func Trace(tracer trace.Tracer, skip ...string) gin.HandlerFunc {
	return func(c *gin.Context) {
		if slices.Contains(skip, c.FullPath()) {
			c.Next()
			return
		}
		info := Get(c)
		ctx := tracing.Propagator.Extract(c.Request.Context(), propagation.HeaderCarrier(c.Request.Header))
		name, route := c.Request.Method, c.FullPath()
		if route != "" {
			name += " " + route
		}
		ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(info.Start))
		if !span.IsRecording() {
			// Not sampled: the context still carries the caller's trace
			// to the upstream.
			c.Request = c.Request.WithContext(ctx)
			c.Next()
			return
		}
		span.SetAttributes(
			attribute.String("http.request.method", c.Request.Method),
			attribute.String("http.route", route),
			attribute.String("client.address", c.ClientIP()),
			tracing.RequestID.String(info.RequestID),
		)
		c.Request = c.Request.WithContext(ctx)
		c.Next()
		status := c.Writer.Status()
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		span.SetAttributes(info.SpanAttributes()...)
		if info.SpanError(status) {
			span.SetStatus(codes.Error, info.ErrorCode)
		}
		span.End()
	}
}

// SpanError says whether the span of a request answered status is an
// error: a 5xx answer, or a stream that ended other than complete
// through no doing of its client (a 200 whose upstream broke off is a
// failure all the same).
func (i *Info) SpanError(status int) bool {
	switch i.End {
	case outcome.None, outcome.Done, outcome.ClientGone, outcome.Cancelled:
		return status >= http.StatusInternalServerError
	}
	return true
}

// SpanAttributes are the span attributes of what i records: the GenAI
// conventions' (operation, system, models, usage, finish reason) and the
// gateway's (key name, endpoint, provider, attempts, time to first token,
// ending, error code, cost). Never a key, a prompt or an error's text.
func (i *Info) SpanAttributes() []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 20)
	if i.KeyName != "" {
		attrs = append(attrs, tracing.KeyName.String(i.KeyName))
	}
	if i.Endpoint != "" {
		attrs = append(attrs, tracing.Endpoint.String(i.Endpoint))
	}
	if i.Model != "" {
		op := "chat"
		if i.Endpoint == "embeddings" {
			op = "embeddings"
		}
		attrs = append(attrs, tracing.Operation.String(op), tracing.RequestModel.String(i.Model))
	}
	if i.System != "" {
		attrs = append(attrs, tracing.System.String(i.System), tracing.Provider.String(i.System))
	}
	if i.Provider != "" {
		attrs = append(attrs, tracing.Route.String(i.Provider))
	}
	if i.Deployment != "" {
		attrs = append(attrs, tracing.ResponseModel.String(i.Deployment))
	}
	if i.Attempts > 0 {
		attrs = append(attrs, tracing.Attempts.Int(i.Attempts), tracing.Fallbacks.Int(i.Fallbacks))
	}
	if i.PromptTokens > 0 || i.CompletionTokens > 0 {
		attrs = append(attrs, tracing.InputTokens.Int(i.PromptTokens), tracing.OutputTokens.Int(i.CompletionTokens))
	}
	if i.FinishReason != "" {
		attrs = append(attrs, tracing.FinishReasons.StringSlice([]string{i.FinishReason}))
	}
	if i.TTFT > 0 {
		attrs = append(attrs, tracing.TTFT.Float64(float64(i.TTFT.Microseconds())/1000))
	}
	if i.End != outcome.None {
		attrs = append(attrs, tracing.End.String(i.End.String()))
	}
	if i.ErrorCode != "" {
		attrs = append(attrs, tracing.ErrorCode.String(i.ErrorCode), tracing.ErrorType.String(i.ErrorCode))
	}
	if i.Priced {
		attrs = append(attrs, tracing.Cost.Float64(i.Cost))
	}
	return attrs
}
