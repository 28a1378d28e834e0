package anthropic

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/streamgate/gateway/providers"
)

// bodyTransport answers every request with body as an event stream.
type bodyTransport []byte

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(bytes.NewReader(b)), Request: r}, nil
}

// FuzzStream feeds arbitrary bytes to the provider as Anthropic's event
// stream. Whatever arrives, the stream ends (no panic, no endless loop),
// and it ends with io.EOF only after a finish reason: a broken stream is
// never a complete answer.
func FuzzStream(f *testing.F) {
	recorded, err := os.ReadFile("testdata/anthropic_toolcall.sse")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(recorded)
	f.Add(recorded[:len(recorded)/2])
	f.Add([]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"pause_turn\"},\"usage\":{\"output_tokens\":1}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"))
	f.Add([]byte("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"))
	f.Add([]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n"))
	f.Add([]byte("data: not json\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		p := New(Options{APIKey: "sk-ant-fuzz", BaseURL: "http://fuzz.invalid", Transport: bodyTransport(body)})
		st, err := p.StreamChat(context.Background(), &providers.Request{Model: "claude", Messages: []providers.Message{{Role: "user", Content: "hi"}}})
		if err != nil {
			return
		}
		defer st.Close()
		finished := false
		for i := 0; ; i++ {
			c, err := st.Recv()
			if errors.Is(err, io.EOF) {
				if !finished {
					t.Fatal("io.EOF without a finish reason")
				}
				return
			}
			if err != nil {
				return
			}
			if c.FinishReason != "" {
				finished = true
			}
			for _, tc := range c.ToolCalls {
				if tc.Index < 0 {
					t.Fatalf("a tool call with index %d", tc.Index)
				}
			}
			if i > len(body)+2 {
				t.Fatalf("%d chunks from %d bytes", i, len(body))
			}
		}
	})
}
