package gateway

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/streamgate/gateway/config"
)

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
