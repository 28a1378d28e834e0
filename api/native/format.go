package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/providers"
)

// streamFormat renders one stream in a wire protocol. Each method appends
// complete SSE frames to buf and returns it; the relay writes what they
// return in one piece. A method may append nothing.
type streamFormat interface {
	// opened starts the stream; provider is the one that answered.
	opened(buf []byte, provider string) []byte
	chunk(buf []byte, c *providers.Chunk) []byte
	done(buf []byte, r *result) []byte
	failed(buf []byte, e *apiError) []byte
}

// result is what the relay learnt about a finished stream.
type result struct {
	finishReason   string
	usage          providers.Usage
	usageEstimated bool
	ttft           time.Duration
	duration       time.Duration
}

// nativeFormat is the gateway's own event stream (POST /v1/stream): events
// whose data is a JSON object with a "type". It renders each event as one
// line for a stream's log; readers add the SSE framing and the ids (see
// appendEvent).
type nativeFormat struct {
	requestID, model string
	// streamID and resumeURL are announced in the connected event.
	streamID, resumeURL string
}

// begin appends the start of an event of type typ.
func (f *nativeFormat) begin(buf []byte, typ string) []byte {
	buf = append(buf, `{"type":"`...)
	buf = append(buf, typ...)
	return append(buf, '"')
}

func (f *nativeFormat) opened(buf []byte, provider string) []byte {
	buf = f.begin(buf, "connected")
	buf = append(buf, `,"id":`...)
	buf = jsonstr.Append(buf, f.requestID)
	buf = append(buf, `,"stream_id":`...)
	buf = jsonstr.Append(buf, f.streamID)
	buf = append(buf, `,"resume_url":`...)
	buf = jsonstr.Append(buf, f.resumeURL)
	buf = append(buf, `,"model":`...)
	buf = jsonstr.Append(buf, f.model)
	buf = append(buf, `,"provider":`...)
	buf = jsonstr.Append(buf, provider)
	return append(buf, "}\n"...)
}

func (f *nativeFormat) chunk(buf []byte, c *providers.Chunk) []byte {
	if c.Content == "" {
		return buf
	}
	buf = f.begin(buf, "delta")
	buf = append(buf, `,"content":`...)
	buf = jsonstr.Append(buf, c.Content)
	return append(buf, "}\n"...)
}

func (f *nativeFormat) done(buf []byte, r *result) []byte {
	buf = f.begin(buf, "done")
	buf = append(buf, `,"finish_reason":`...)
	buf = jsonstr.Append(buf, r.finishReason)
	buf = append(buf, `,"usage":`...)
	buf = appendUsage(buf, &r.usage)
	if r.usageEstimated {
		buf = append(buf, `,"usage_estimated":true`...)
	}
	buf = append(buf, `,"ttft_ms":`...)
	buf = appendMillis(buf, r.ttft)
	buf = append(buf, `,"duration_ms":`...)
	buf = appendMillis(buf, r.duration)
	return append(buf, "}\n"...)
}

func (f *nativeFormat) failed(buf []byte, e *apiError) []byte {
	buf = f.begin(buf, "error")
	buf = append(buf, `,"error":`...)
	buf = appendErrorObject(buf, e)
	return append(buf, "}\n"...)
}

// eventPrefix is how every native event line begins.
const eventPrefix = `{"type":"`

// eventType returns the type of a native event line.
func eventType(line []byte) []byte {
	t := line[min(len(eventPrefix), len(line)):]
	if i := bytes.IndexByte(t, '"'); i >= 0 {
		return t[:i]
	}
	return nil
}

// terminal reports whether a native event line ends its stream.
func terminal(line []byte) bool {
	t := eventType(line)
	return string(t) == "done" || string(t) == "error"
}

// appendEvent frames a native event line as SSE with its id, and with an
// event: line naming its type when named (for EventSource listeners).
func appendEvent(buf []byte, id int64, line []byte, named bool) []byte {
	buf = append(buf, "id: "...)
	buf = strconv.AppendInt(buf, id, 10)
	buf = append(buf, '\n')
	if named {
		buf = append(buf, "event: "...)
		buf = append(buf, eventType(line)...)
		buf = append(buf, '\n')
	}
	buf = append(buf, "data: "...)
	buf = append(buf, line...)
	return append(buf, "\n\n"...)
}

func appendUsage(buf []byte, u *providers.Usage) []byte {
	buf = append(buf, `{"prompt_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.PromptTokens), 10)
	buf = append(buf, `,"completion_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.CompletionTokens), 10)
	buf = append(buf, `,"total_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.TotalTokens), 10)
	return append(buf, '}')
}

// appendMillis writes d in milliseconds with microsecond precision.
func appendMillis(buf []byte, d time.Duration) []byte {
	return strconv.AppendFloat(buf, float64(d.Microseconds())/1000, 'f', -1, 64)
}

// chatFormat is OpenAI's chat.completion.chunk stream, for
// POST /v1/chat/completions with stream=true.
type chatFormat struct {
	// prefix is every chunk's bytes up to the inside of "choices":[.
	prefix       []byte
	includeUsage bool
}

func newChatFormat(requestID, model string, created int64, includeUsage bool) *chatFormat {
	p := make([]byte, 0, 128)
	p = append(p, `data: {"id":`...)
	p = jsonstr.Append(p, "chatcmpl-"+requestID)
	p = append(p, `,"object":"chat.completion.chunk","created":`...)
	p = strconv.AppendInt(p, created, 10)
	p = append(p, `,"model":`...)
	p = jsonstr.Append(p, model)
	p = append(p, `,"system_fingerprint":null,"choices":[`...)
	return &chatFormat{prefix: p, includeUsage: includeUsage}
}

func (f *chatFormat) opened(buf []byte, _ string) []byte {
	buf = append(buf, f.prefix...)
	return append(buf, `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
}

// wireToolCall is a tool-call delta in OpenAI's shape.
type wireToolCall struct {
	Index    int    `json:"index"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

func (f *chatFormat) chunk(buf []byte, c *providers.Chunk) []byte {
	if c.Content == "" && len(c.ToolCalls) == 0 && c.FinishReason == "" {
		return buf // usage alone is sent at the end, if asked for
	}
	buf = append(buf, f.prefix...)
	buf = append(buf, `{"index":0,"delta":{`...)
	sep := false
	if c.Content != "" {
		buf = append(buf, `"content":`...)
		buf = jsonstr.Append(buf, c.Content)
		sep = true
	}
	if len(c.ToolCalls) > 0 {
		if sep {
			buf = append(buf, ',')
		}
		calls := make([]wireToolCall, len(c.ToolCalls))
		for i, tc := range c.ToolCalls {
			calls[i] = wireToolCall{Index: tc.Index, ID: tc.ID, Type: tc.Type}
			calls[i].Function.Name, calls[i].Function.Arguments = tc.Name, tc.Arguments
		}
		b, _ := json.Marshal(calls) // plain structs: cannot fail
		buf = append(buf, `"tool_calls":`...)
		buf = append(buf, b...)
	}
	buf = append(buf, `},"logprobs":null,"finish_reason":`...)
	if c.FinishReason == "" {
		buf = append(buf, "null"...)
	} else {
		buf = jsonstr.Append(buf, c.FinishReason)
	}
	return append(buf, "}]}\n\n"...)
}

func (f *chatFormat) done(buf []byte, r *result) []byte {
	if f.includeUsage {
		buf = append(buf, f.prefix...)
		buf = append(buf, `],"usage":`...)
		buf = appendUsage(buf, &r.usage)
		buf = append(buf, "}\n\n"...)
	}
	return append(buf, "data: [DONE]\n\n"...)
}

// failed ends the stream the way OpenAI does: a data line holding an error
// object, which the official SDKs raise as an API error. No [DONE] follows.
func (f *chatFormat) failed(buf []byte, e *apiError) []byte {
	buf = append(buf, `data: {"error":`...)
	buf = appendErrorObject(buf, e)
	return append(buf, "}\n\n"...)
}
