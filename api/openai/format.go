package openai

import (
	"encoding/json"
	"strconv"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
)

// format is OpenAI's chat.completion.chunk stream, for
// POST /v1/chat/completions with stream=true.
type format struct{ streamBase }

// streamBase is what OpenAI's chat and legacy completion streams share:
// each chunk's bytes up to the inside of "choices":[, the usage chunk
// and [DONE] at the end, and errors as a data line.
type streamBase struct {
	prefix       []byte
	includeUsage bool
}

// prefix returns the bytes every chunk of a stream of object begins with.
func chunkPrefix(id, object, model string, created int64, fingerprint bool) []byte {
	p := make([]byte, 0, 128)
	p = append(p, `data: {"id":`...)
	p = jsonstr.Append(p, id)
	p = append(p, `,"object":"`...)
	p = append(p, object...)
	p = append(p, `","created":`...)
	p = strconv.AppendInt(p, created, 10)
	p = append(p, `,"model":`...)
	p = jsonstr.Append(p, model)
	if fingerprint {
		p = append(p, `,"system_fingerprint":null`...)
	}
	return append(p, `,"choices":[`...)
}

// appendFinish ends a choice: its finish reason (null while streaming),
// the choices array and the chunk.
func appendFinish(buf []byte, reason string) []byte {
	buf = append(buf, `,"logprobs":null,"finish_reason":`...)
	if reason == "" {
		buf = append(buf, "null"...)
	} else {
		buf = jsonstr.Append(buf, reason)
	}
	return append(buf, "}]}\n\n"...)
}

func newFormat(requestID, model string, created int64, includeUsage bool) *format {
	return &format{streamBase{prefix: chunkPrefix("chatcmpl-"+requestID, "chat.completion.chunk", model, created, true), includeUsage: includeUsage}}
}

func (f *format) Opened(buf []byte, _ string) []byte {
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

func (f *format) Chunk(buf []byte, c *providers.Chunk) []byte {
	if !c.Delta() && c.FinishReason == "" {
		return buf // usage alone is sent at the end, if asked for
	}
	buf = append(buf, f.prefix...)
	buf = append(buf, `{"index":0,"delta":{`...)
	sep := false
	if c.Reasoning != "" {
		// The field DeepSeek, vLLM and the clients of both read.
		buf = append(buf, `"reasoning_content":`...)
		buf = jsonstr.Append(buf, c.Reasoning)
		sep = true
	}
	if c.RedactedReasoning != "" {
		// A thinking block Anthropic encrypted: opaque, sent back as it
		// is (reasoning_redacted on the assistant message).
		if sep {
			buf = append(buf, ',')
		}
		buf = append(buf, `"reasoning_redacted":`...)
		buf = jsonstr.Append(buf, c.RedactedReasoning)
		sep = true
	}
	if c.ReasoningSignature != "" {
		// Anthropic's thinking signature, which a client sends back with
		// the thinking (reasoning_signature on the assistant message):
		// the gateway's extension, as chat completions has no field for it.
		if sep {
			buf = append(buf, ',')
		}
		buf = append(buf, `"reasoning_signature":`...)
		buf = jsonstr.Append(buf, c.ReasoningSignature)
		sep = true
	}
	if c.Content != "" {
		if sep {
			buf = append(buf, ',')
		}
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
	buf = append(buf, '}')
	return appendFinish(buf, c.FinishReason)
}

// Done sends the usage chunk, if asked for, and [DONE].
func (f *streamBase) Done(buf []byte, r *relay.Result) []byte {
	if f.includeUsage {
		buf = append(buf, f.prefix...)
		buf = append(buf, `],"usage":`...)
		buf = api.AppendUsage(buf, &r.Usage)
		buf = append(buf, "}\n\n"...)
	}
	return append(buf, "data: [DONE]\n\n"...)
}

// Failed ends the stream the way OpenAI does: a data line holding an error
// object, which the official SDKs raise as an API error. No [DONE] follows.
func (f *streamBase) Failed(buf []byte, e *failure.Error) []byte { return appendErrorData(buf, e) }

// appendErrorData appends an error object as a data line: how OpenAI's
// streams (chat and legacy completions alike) end when they fail.
func appendErrorData(buf []byte, e *failure.Error) []byte {
	buf = append(buf, `data: {"error":`...)
	buf = failure.AppendObject(buf, e)
	return append(buf, "}\n\n"...)
}

var _ relay.Format = (*format)(nil)
