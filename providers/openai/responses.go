package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/streamgate/gateway/providers"
)

var _ providers.NativeSpeaker = (*Provider)(nil)

// SpeaksNative reports that the provider takes Responses API requests as
// the client sent them, when its upstream serves that API.
func (p *Provider) SpeaksNative(api string) bool {
	return p.responses && api == providers.APIOpenAIResponses
}

// apiOf is the Native API req is made in, or "".
func apiOf(req *providers.Request) string {
	if req.Native == nil {
		return ""
	}
	return req.Native.API
}

// streamResponses sends a Native Responses request to the upstream's
// POST /responses: the client's body, with the routed model and the
// fields the engine decides written over it, always streamed.
func (p *Provider) streamResponses(ctx context.Context, req *providers.Request) (providers.Stream, error) {
	model := req.Model
	if d, ok := p.direct.deployments[model]; ok {
		model = d
	}
	e := providers.EditBody(req.Native.Body)
	e.Set("model", model)
	e.Set("stream", true)
	// A background run is the gateway's own: upstream it is an
	// ordinary stream that the gateway reads to the end.
	e.Delete("background")
	e.Int("max_output_tokens", req.MaxTokens)
	e.Float("temperature", req.Temperature)
	e.Float("top_p", req.TopP)
	e.String("reasoning.effort", req.ReasoningEffort)
	e.String("user", req.User)
	body, err := e.Bytes()
	if err != nil {
		return nil, err
	}
	rb, w, err := p.post(ctx, "/responses", body, req.Native.Header)
	if err != nil {
		return nil, err
	}
	return &responsesStream{stream: stream{body: rb, events: newEventReader(rb, p.maxLine, w)}}, nil
}

// responsesStream reads a Responses API event stream. Each event goes
// back whole in Chunk.Raw (its JSON and a newline), with what it carries
// for the engine: text and reasoning deltas, function calls, and at the
// end the finish reason and usage. Until the first delta, events are
// held and go out with it, so that an attempt that fails before its first
// delta (and is retried) leaves nothing behind.
type responsesStream struct {
	stream
	pending   []byte
	delivered bool
	// calls are the output indexes of the function calls, in order: a
	// call's place here is its tool-call index.
	calls []int64
}

// Recv returns the next event as a chunk. response.completed and
// response.incomplete end the answer; response.failed and error events
// are the upstream's failure, and a stream that ends before either was
// cut short.
func (s *responsesStream) Recv() (providers.Chunk, error) {
	for !s.done {
		data, err := s.events.next()
		if errors.Is(err, io.EOF) {
			if !s.finished {
				return providers.Chunk{}, providers.ErrTruncated
			}
			s.done = true
			break
		}
		if err != nil {
			return providers.Chunk{}, classify(err, 0)
		}
		if bytes.Equal(data, doneMarker) {
			// Some servers end with chat's marker after the terminal
			// event; before it, the answer is cut short.
			if !s.finished {
				return providers.Chunk{}, providers.ErrTruncated
			}
			s.done = true
			break
		}
		if s.finished {
			continue // nothing after the terminal event counts
		}
		if !json.Valid(data) {
			return providers.Chunk{}, fmt.Errorf("%w: a Responses event is not JSON", providers.ErrMalformed)
		}
		n := len(s.pending)
		s.pending = append(append(s.pending, data...), '\n')
		// Read from the pending bytes as a string: the event's fields
		// are then substrings of the Raw that carries them, not copies.
		raw := string(s.pending)
		var c providers.Chunk
		if err := s.event(raw[n:], &c); err != nil {
			return providers.Chunk{}, err
		}
		if !s.delivered && !c.Delta() && c.FinishReason == "" {
			continue
		}
		s.delivered = true
		c.Raw = raw
		s.pending = s.pending[:0]
		return c, nil
	}
	return providers.Chunk{}, io.EOF
}

// event fills c from one event's JSON.
func (s *responsesStream) event(ev string, c *providers.Chunk) error {
	switch gjson.Get(ev, "type").Str {
	case "response.output_text.delta", "response.refusal.delta":
		c.Content = gjson.Get(ev, "delta").Str
	case "response.reasoning_text.delta", "response.reasoning_summary_text.delta":
		c.Reasoning = gjson.Get(ev, "delta").Str
	case "response.output_item.added":
		item := gjson.Get(ev, "item")
		if item.Get("type").Str != "function_call" {
			return nil
		}
		s.calls = append(s.calls, gjson.Get(ev, "output_index").Int())
		c.ToolCalls = []providers.ToolCallDelta{{Index: len(s.calls) - 1, ID: item.Get("call_id").Str, Type: "function", Name: item.Get("name").Str}}
	case "response.function_call_arguments.delta":
		at := gjson.Get(ev, "output_index").Int()
		for i, o := range s.calls {
			if o == at {
				c.ToolCalls = []providers.ToolCallDelta{{Index: i, Arguments: gjson.Get(ev, "delta").Str}}
				return nil
			}
		}
		return fmt.Errorf("%w: function call arguments for output %d, which is no function call", providers.ErrMalformed, at)
	case "response.completed", "response.incomplete":
		r := gjson.Get(ev, "response")
		s.finished = true
		c.FinishReason = finishOf(r)
		c.Usage = responsesUsage(r.Get("usage"))
	case "response.failed":
		e := gjson.Get(ev, "response.error")
		return inBand(e.Get("code").Str, e.Get("message").Str)
	case "error":
		return inBand(gjson.Get(ev, "code").Str, gjson.Get(ev, "message").Str)
	}
	return nil
}

// finishOf is a finished response's finish reason as chat completions
// says it: why it is incomplete, tool_calls when it calls functions,
// else stop.
func finishOf(r gjson.Result) string {
	switch r.Get("incomplete_details.reason").Str {
	case "max_output_tokens":
		return "length"
	case "content_filter":
		return "content_filter"
	}
	if r.Get("status").Str == "incomplete" {
		return "length"
	}
	if r.Get(`output.#(type=="function_call")`).Exists() {
		return "tool_calls"
	}
	return "stop"
}

// responsesUsage reads the Responses API's usage, or nil when there is
// none.
func responsesUsage(u gjson.Result) *providers.Usage {
	if !u.IsObject() {
		return nil
	}
	return &providers.Usage{
		PromptTokens:     int(u.Get("input_tokens").Int()),
		CompletionTokens: int(u.Get("output_tokens").Int()),
		TotalTokens:      int(u.Get("total_tokens").Int()),
		CachedTokens:     int(u.Get("input_tokens_details.cached_tokens").Int()),
		ReasoningTokens:  int(u.Get("output_tokens_details.reasoning_tokens").Int()),
	}
}

// inBand is the error of a response that failed on the way, with the
// status its code stands for: so that a failure before the first delta
// is retried, or not, as the same failure before the stream would be.
func inBand(code, msg string) error {
	if msg == "" {
		msg = "the upstream failed the response"
	}
	status := http.StatusBadGateway
	switch {
	case code == "rate_limit_exceeded":
		status = http.StatusTooManyRequests
	case code == "server_error":
		status = http.StatusInternalServerError
	case code == "vector_store_timeout":
		status = http.StatusGatewayTimeout
	case code == "invalid_prompt", strings.Contains(code, "image"):
		status = http.StatusBadRequest
	}
	if code == "" {
		code = "upstream_error"
	}
	return &providers.Error{Status: status, Code: code, Message: msg}
}
