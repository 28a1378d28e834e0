package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/providers/mock"
)

func BenchmarkNativeDeltaFrame(b *testing.B) {
	f := &nativeFormat{requestID: "r", model: "m"}
	c := providers.Chunk{Content: " token"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.chunk(buf[:0], &c)
	}
}

func BenchmarkChatChunkFrame(b *testing.B) {
	f := newChatFormat("r", "m", 1, false)
	c := providers.Chunk{Content: " token"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.chunk(buf[:0], &c)
	}
}

// discardWriter is a flushable ResponseWriter that throws bytes away.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// BenchmarkRelayPerToken streams one mock stream of b.N tokens in process:
// ns/op and allocs/op are per token, gateway side only. chat is the direct
// relay; native is a producer appending to the stream's log and writing to
// its primary connection, as POST /v1/stream runs.
func BenchmarkRelayPerToken(b *testing.B) {
	for _, name := range []string{"native", "chat"} {
		b.Run(name, func(b *testing.B) {
			cfg := config.Default()
			cfg.Server.HeartbeatInterval = config.Duration(15 * time.Second)
			s := &Server{shared: &shared{}, cfg: &cfg, redact: strings.NewReplacer()}
			s.metrics = newMetrics(s)
			opts := mock.Defaults()
			opts.Tokens = b.N
			req := &providers.Request{Messages: []providers.Message{{Role: "user", Content: "hi"}}}
			st, err := mock.New(opts).StreamChat(context.Background(), req)
			if err != nil {
				b.Fatal(err)
			}
			w := &discardWriter{h: http.Header{}}
			info := &middleware.Info{}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			if name == "chat" {
				s.relay(ctx, w, st.(idleStream), newChatFormat("r", "m", 1, true), req, info, time.Now())
			} else {
				l, _ := eventlog.NewMemory(eventlog.MemoryOptions{}).Create("s", eventlog.Meta{})
				p := &producer{s: s, log: l, ctx: ctx, next: 1, primary: &primary{out: startSSE(w, 0, 0), reader: l.Attach(0)}}
				f := &nativeFormat{requestID: "r", model: "m"}
				buf, res, err := pump(st.(idleStream), f, req, info, time.Now(), nil, p.append, nil)
				buf, _ = s.ending(ctx, buf, f, &res, err, info)
				l.Finish(buf)
				p.toPrimary(p.next, buf)
				if p.primary.gone.Load() {
					b.Fatal("the primary connection failed")
				}
			}
			if info.End != "done" || info.CompletionTokens != b.N {
				b.Fatalf("ended %q after %d tokens", info.End, info.CompletionTokens)
			}
		})
	}
}

// BenchmarkStreamOverHTTP is one whole 64-token stream per op through a
// real loopback server, for both endpoints.
func BenchmarkStreamOverHTTP(b *testing.B) {
	cfg, err := config.Parse("bench.yaml", []byte(strings.Replace(newConfig("", ""), "tokens: 5", "tokens: 64", 1)))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	for _, tc := range []struct{ name, path, body string }{
		{"native", "/v1/stream", `{"model":"mock-gpt","prompt":"hi"}`},
		{"chat", "/v1/chat/completions", `{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, err := ts.Client().Post(ts.URL+tc.path, "application/json", strings.NewReader(tc.body))
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
