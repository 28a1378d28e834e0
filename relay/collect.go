package relay

import (
	"net/http"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// Answer is a whole answer, read from a stream for a client that asked
// for no streaming.
type Answer struct {
	Content string
	// Reasoning is the model's thinking before (and between) its answer,
	// and ReasoningSignature its signature (Anthropic).
	Reasoning          string
	ReasoningSignature string
	RedactedReasoning  []string
	ToolCalls          []providers.ToolCall
	// Raw is, for a Native request, the upstream's frames in order
	// (Chunk.Raw), from which the dialect builds its answer as the
	// upstream gave it.
	Raw []byte
}

// MaxAnswerBytes bounds a whole answer (text and tool-call arguments)
// kept for a client that asked for no streaming.
const MaxAnswerBytes = 16 << 20

// ErrAnswerTooLarge ends a whole answer longer than MaxAnswerBytes.
var ErrAnswerTooLarge = failure.Define(http.StatusBadGateway, failure.TypeServer, "upstream_answer_too_large",
	"the upstream's answer is larger than the gateway keeps for a response that is not streamed (16 MiB): ask with stream: true")

// Collect reads a whole stream into one answer. The upstream is still
// streamed (one code path, cancellable at any point).
func Collect(st providers.Stream, req *providers.Request) (Answer, Result, error) {
	var (
		t         tally
		text      []byte
		reasoning []byte
		signature string
		redacted  []string
		calls     []providers.ToolCall
		raw       []byte
		size      int
		err       error
	)
	for err == nil {
		var c providers.Chunk
		c, err = st.Recv()
		if err != nil {
			break
		}
		if _, err = t.add(&c); err != nil {
			break
		}
		size += len(c.Content) + len(c.Reasoning) + len(c.Raw)
		for i := range c.ToolCalls {
			size += len(c.ToolCalls[i].Arguments) + len(c.ToolCalls[i].Name)
		}
		if size > MaxAnswerBytes {
			err = ErrAnswerTooLarge
			break
		}
		raw = append(raw, c.Raw...)
		text = append(text, c.Content...)
		reasoning = append(reasoning, c.Reasoning...)
		signature += c.ReasoningSignature
		if c.RedactedReasoning != "" {
			redacted = append(redacted, c.RedactedReasoning)
		}
		for _, d := range c.ToolCalls {
			for len(calls) <= d.Index {
				calls = append(calls, providers.ToolCall{Type: "function"})
			}
			tc := &calls[d.Index]
			if d.ID != "" {
				tc.ID = d.ID
			}
			if d.Type != "" {
				tc.Type = d.Type
			}
			tc.Function.Name += d.Name
			tc.Function.Arguments += d.Arguments
		}
	}
	err = t.end(err, req)
	res := t.res
	price(st, &res)
	if err != nil {
		return Answer{}, res, err
	}
	return Answer{Content: string(text), Reasoning: string(reasoning), ReasoningSignature: signature, RedactedReasoning: redacted, ToolCalls: calls, Raw: raw}, res, nil
}
