package native

import (
	"strconv"
	"time"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
	"github.com/streamgate/gateway/resumable"
)

// format is the gateway's own event stream (POST /v1/stream): events
// whose data is a JSON object with a "type". It renders each event as one
// line for a stream's log; readers add the SSE framing and the ids (see
// resumable.Lines).
type format struct {
	requestID, model string
	// streamID and resumeURL are announced in the connected event.
	streamID, resumeURL string
}

// begin appends the start of an event of type typ.
func (f *format) begin(buf []byte, typ string) []byte {
	buf = append(buf, `{"type":"`...)
	buf = append(buf, typ...)
	return append(buf, '"')
}

func (f *format) Opened(buf []byte, provider string) []byte {
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

func (f *format) Chunk(buf []byte, c *providers.Chunk) []byte {
	if c.Reasoning != "" || c.ReasoningSignature != "" || c.RedactedReasoning != "" {
		// Thinking is its own event, so a page can show it apart from
		// the answer; the signature that ends a thinking block comes as
		// one too, to be sent back with it.
		buf = f.begin(buf, "reasoning")
		if c.Reasoning != "" {
			buf = append(buf, `,"content":`...)
			buf = jsonstr.Append(buf, c.Reasoning)
		}
		if c.ReasoningSignature != "" {
			buf = append(buf, `,"signature":`...)
			buf = jsonstr.Append(buf, c.ReasoningSignature)
		}
		if c.RedactedReasoning != "" {
			buf = append(buf, `,"redacted":`...)
			buf = jsonstr.Append(buf, c.RedactedReasoning)
		}
		buf = append(buf, "}\n"...)
	}
	if c.Content == "" {
		return buf
	}
	buf = f.begin(buf, "delta")
	buf = append(buf, `,"content":`...)
	buf = jsonstr.Append(buf, c.Content)
	return append(buf, "}\n"...)
}

func (f *format) Done(buf []byte, r *relay.Result) []byte {
	buf = f.begin(buf, "done")
	buf = append(buf, `,"finish_reason":`...)
	buf = jsonstr.Append(buf, r.FinishReason)
	buf = append(buf, `,"usage":`...)
	buf = api.AppendUsage(buf, &r.Usage)
	if r.UsageEstimated {
		buf = append(buf, `,"usage_estimated":true`...)
	}
	if r.Priced {
		// Dollars at the deployment's price, in the shortest form
		// that reads back as the same number.
		buf = append(buf, `,"cost":`...)
		buf = strconv.AppendFloat(buf, r.Cost, 'f', -1, 64)
	}
	buf = append(buf, `,"ttft_ms":`...)
	buf = appendMillis(buf, r.TTFT)
	buf = append(buf, `,"duration_ms":`...)
	buf = appendMillis(buf, r.Duration)
	return append(buf, "}\n"...)
}

func (f *format) Failed(buf []byte, e *failure.Error) []byte {
	buf = f.begin(buf, "error")
	buf = append(buf, `,"error":`...)
	buf = failure.AppendObject(buf, e)
	return append(buf, "}\n"...)
}

// Terminal reports whether line, a native event, ends its stream: done
// (the answer was complete) or error.
func (f *format) Terminal(line []byte) (outcome.End, bool) {
	switch string(resumable.EventType(line)) {
	case "done":
		return outcome.Done, true
	case "error":
		return outcome.StreamError, true
	}
	return outcome.None, false
}

var _ resumable.Lines = (*format)(nil)

// appendMillis writes d in milliseconds with microsecond precision.
func appendMillis(buf []byte, d time.Duration) []byte {
	return strconv.AppendFloat(buf, float64(d.Microseconds())/1000, 'f', -1, 64)
}
