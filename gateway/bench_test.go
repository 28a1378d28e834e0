package gateway

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/streamgate/gateway/config"
)

// BenchmarkStreamOverHTTP is one whole stream per op (16 or 64 tokens)
// through a real loopback server, for both endpoints, with tracing off
// and on (every request traced, exported over OTLP/HTTP to a collector
// that discards): on minus off is what tracing costs per request, and
// 64 minus 16 tokens what each token costs, the same either way.
func BenchmarkStreamOverHTTP(b *testing.B) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	for _, run := range []struct{ tokens, tracing string }{{"16", "off"}, {"16", "on"}, {"64", "off"}, {"64", "on"}} {
		tracing := run.tracing
		yaml := strings.Replace(newConfig("", ""), "tokens: 5", "tokens: "+run.tokens, 1)
		if tracing == "on" {
			yaml += "tracing:\n  enabled: true\n  endpoint: " + collector.URL + "\n  sample_ratio: 1\n"
		}
		cfg, err := config.Parse("bench.yaml", []byte(yaml))
		if err != nil {
			b.Fatal(err)
		}
		srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		ts := httptest.NewServer(srv.Handler())
		for _, tc := range []struct{ name, path, body string }{
			{"native", "/v1/stream", `{"model":"mock-gpt","prompt":"hi"}`},
			{"chat", "/v1/chat/completions", `{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		} {
			b.Run(tc.name+"/tokens="+run.tokens+"/tracing="+tracing, func(b *testing.B) {
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
		ts.Close()
		srv.Close()
	}
}

// BenchmarkChatOverOpenAI is one 64-token chat stream per op through the
// openai provider, from a loopback upstream speaking OpenAI's wire: the
// path production streams take (BenchmarkStreamOverHTTP uses the mock
// provider, which has no HTTP upstream).
func BenchmarkChatOverOpenAI(b *testing.B) {
	frames := []string{roleChunk}
	for range 64 {
		frames = append(frames, helloChunk)
	}
	frames = append(frames, stopChunk)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		sseOK(w, frames...)
	}))
	defer up.Close()
	providers, models := openAIUpstream(up.URL, "sk-bench-upstream")
	cfg, err := config.Parse("bench.yaml", []byte(newConfig(providers, models)))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	body := `{"model":"up-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	b.ReportAllocs()
	for b.Loop() {
		resp, err := ts.Client().Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
