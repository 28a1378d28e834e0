package relay

import "github.com/streamgate/gateway/providers"

// Answer is a whole answer, read from a stream for a client that asked
// for no streaming.
type Answer struct {
	Content   string
	ToolCalls []providers.ToolCall
}

// Collect reads a whole stream into one answer. The upstream is still
// streamed (one code path, cancellable at any point).
func Collect(st providers.Stream, req *providers.Request) (Answer, Result, error) {
	var (
		t     tally
		calls []providers.ToolCall
		err   error
	)
	for err == nil {
		var c providers.Chunk
		c, err = st.Recv()
		if err != nil {
			break
		}
		t.add(&c)
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
	res, err := t.end(err, req)
	if err != nil {
		return Answer{}, res, err
	}
	return Answer{Content: string(t.answer), ToolCalls: calls}, res, nil
}
