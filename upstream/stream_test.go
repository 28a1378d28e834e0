package upstream

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

type nopObserver struct{}

func (nopObserver) Retried(string)                {}
func (nopObserver) FellBack(string)               {}
func (nopObserver) Failed(string, *failure.Error) {}
func (nopObserver) QueueFull(string)              {}

// TestStreamLetsGoOfTheNativeBody: a request's native body (the whole
// conversation, from an agent) is kept while another attempt may need
// it, and let go of at the first delta, after which none follows.
func TestStreamLetsGoOfTheNativeBody(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte(`
auth: {enabled: false}
providers:
  m: {type: mock, mock: {tokens: 3}}
models:
  x: {routes: [{provider: m}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(cfg, nil, Options{Log: slog.New(slog.DiscardHandler), Observer: nopObserver{}, Redact: func(s string) string { return s }})
	if err != nil {
		t.Fatal(err)
	}
	req := &providers.Request{Messages: []providers.Message{{Role: "user", Content: "hi"}},
		Native: &providers.Native{API: providers.APIAnthropicMessages, Body: []byte(`{"messages":[]}`)}}
	s, _, err := r.Open(context.Background(), req, "x", "req-1")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if req.Native.Body == nil {
		t.Fatal("the body was let go of before the first delta")
	}
	var deltas int
	for {
		c, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Content != "" {
			deltas++
			if req.Native.Body != nil {
				t.Fatal("the body is still held after the first delta")
			}
		}
	}
	if deltas == 0 {
		t.Fatal("no delta")
	}
}
