package openai

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/internal/discard"
	"github.com/streamgate/gateway/metrics"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/providers/mock"
	"github.com/streamgate/gateway/relay"
)

func BenchmarkChatChunkFrame(b *testing.B) {
	f := newFormat("r", "m", 1, false)
	c := providers.Chunk{Content: " token"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Chunk(buf[:0], &c)
	}
}

// BenchmarkRelayPerToken streams one mock stream of b.N tokens in process
// through the relay, as POST /v1/chat/completions runs it, metrics
// included: ns/op and allocs/op are per token, gateway side only.
func BenchmarkRelayPerToken(b *testing.B) {
	opts := mock.Defaults()
	opts.Tokens = b.N
	req := &providers.Request{Messages: []providers.Message{{Role: "user", Content: "hi"}}}
	st, err := mock.New(opts).StreamChat(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	out := relay.StartSSE(discard.New(), 15*time.Second, 0)
	defer out.Stop()
	obs := metrics.New().Stream("m", func() string { return "mock" }, nil)
	p := &relay.Pump{Stream: st.(relay.IdleStream), Format: newFormat("r", "m", 1, true), Request: req, Start: time.Now(), Observer: obs}
	b.ReportAllocs()
	b.ResetTimer()
	o := relay.Relay(context.Background(), out, p, "mock", strings.NewReplacer().Replace)
	if o.End != outcome.Done || o.Usage.CompletionTokens != b.N {
		b.Fatalf("ended %v after %d tokens", o.End, o.Usage.CompletionTokens)
	}
}

// BenchmarkDecodeRequest decodes and translates a short chat request, the
// per-request cost of the dialect.
func BenchmarkDecodeRequest(b *testing.B) {
	body := `{"model":"gpt-4.1","stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"max_completion_tokens":1024,` +
		`"tools":[{"type":"function","function":{"name":"read","description":"Reads a file","parameters":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}}}],` +
		`"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"benchmark [mock tokens=8]"}]}`
	b.ReportAllocs()
	for b.Loop() {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var cr chatRequest
		if e := api.DecodeJSON(r, &cr, false); e != nil {
			b.Fatal(e.Message)
		}
		if _, e := cr.ToProvider(); e != nil {
			b.Fatal(e.Message)
		}
	}
}
