package anthropic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	sdk "github.com/anthropics/anthropic-sdk-go"

	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/relay"
)

// messageOf is the whole answer as Anthropic's message object: built from
// the upstream's own events when it was Anthropic's (so every block it
// sent is kept as it was), translated otherwise.
func messageOf(id, model string, ans *relay.Answer, res *relay.Result) ([]byte, error) {
	if len(ans.Raw) > 0 {
		return accumulate(ans.Raw)
	}
	b := make([]byte, 0, 256+len(ans.Content)+len(ans.Reasoning))
	b = append(b, `{"id":`...)
	b = jsonstr.Append(b, id)
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = jsonstr.Append(b, model)
	b = append(b, `,"content":[`...)
	n := 0
	sep := func() {
		if n > 0 {
			b = append(b, ',')
		}
		n++
	}
	if ans.Reasoning != "" || ans.ReasoningSignature != "" {
		sep()
		b = append(b, `{"type":"thinking","thinking":`...)
		b = jsonstr.Append(b, ans.Reasoning)
		b = append(b, `,"signature":`...)
		b = jsonstr.Append(b, ans.ReasoningSignature)
		b = append(b, '}')
	}
	for _, data := range ans.RedactedReasoning {
		sep()
		b = append(b, `{"type":"redacted_thinking","data":`...)
		b = jsonstr.Append(b, data)
		b = append(b, '}')
	}
	if ans.Content != "" {
		sep()
		b = append(b, `{"type":"text","text":`...)
		b = jsonstr.Append(b, ans.Content)
		b = append(b, '}')
	}
	for _, tc := range ans.ToolCalls {
		input := tc.Function.Arguments
		if input == "" {
			input = "{}"
		}
		if !json.Valid([]byte(input)) {
			return nil, fmt.Errorf("the arguments of tool call %s are not JSON", tc.ID)
		}
		sep()
		b = append(b, `{"type":"tool_use","id":`...)
		b = jsonstr.Append(b, tc.ID)
		b = append(b, `,"name":`...)
		b = jsonstr.Append(b, tc.Function.Name)
		b = append(b, `,"input":`...)
		b = append(b, input...)
		b = append(b, '}')
	}
	b = append(b, `],"stop_reason":`...)
	b = jsonstr.Append(b, stopReason(res.FinishReason))
	b = append(b, `,"stop_sequence":null,"usage":`...)
	b = appendUsage(b, &res.Usage)
	if res.UsageEstimated {
		b = append(b, `,"usage_estimated":true`...)
	}
	return append(b, "}\n"...), nil
}

// accumulate builds the message from an Anthropic stream's frames with
// the SDK's accumulator, which keeps each block's wire JSON and applies
// the deltas to it.
func accumulate(frames []byte) ([]byte, error) {
	var msg sdk.Message
	for len(frames) > 0 {
		frame, rest, _ := bytes.Cut(frames, []byte("\n\n"))
		frames = rest
		_, data, ok := bytes.Cut(frame, []byte("\ndata: "))
		if !ok {
			continue
		}
		var ev sdk.MessageStreamEventUnion
		if err := ev.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		if err := msg.Accumulate(ev); err != nil {
			return nil, err
		}
	}
	if err := msg.Accumulate(sdk.MessageStreamEventUnion{Type: "message_stop"}); err != nil {
		return nil, err
	}
	raw := msg.RawJSON()
	if raw == "" {
		return nil, errors.New("the stream held no message")
	}
	return append([]byte(raw), '\n'), nil
}
