package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/failure"
)

const (
	roleChunk  = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n"
	helloChunk = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hello"},"finish_reason":null}]}` + "\n\n"
	stopChunk  = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n"
)

// countingUpstream serves fn with the 1-based number of the call.
func countingUpstream(t *testing.T, fn func(n int32, w http.ResponseWriter, r *http.Request)) (*atomic.Int32, string) {
	var calls atomic.Int32
	up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		fn(calls.Add(1), w, r)
	})
	return &calls, up.URL
}

func sseOK(w http.ResponseWriter, frames ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	writeSSE(w, frames...)
}

// routesConfig serves model "resilient" from provider up1, then up2.
func routesConfig(url1, url2, extra string) string {
	return newConfig(fmt.Sprintf(`  up1:
    type: openai
    base_url: %s/v1
%s  up2:
    type: openai
    base_url: %s/v1
`, url1, extra, url2), `  resilient:
    routes:
      - provider: up1
      - provider: up2
`)
}

func TestRetriesAndFallbacks(t *testing.T) {
	// A closed port: connection refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()

	for _, tc := range []struct {
		name     string
		first    func(n int32, w http.ResponseWriter, r *http.Request)
		deadURL  bool
		provider string // which provider answers in the end
		calls    int32  // calls to the first upstream
		attempts string
	}{
		{name: "503 then success on the same route", provider: "up1", calls: 2, attempts: `"attempts":2,"fallbacks":0`,
			first: func(n int32, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					http.Error(w, `{"error":{"message":"overloaded","type":"server_error"}}`, 503)
					return
				}
				sseOK(w, roleChunk, helloChunk, stopChunk)
			}},
		{name: "first route down: fallback", deadURL: true, provider: "up2", attempts: `"attempts":3,"fallbacks":1`},
		{name: "error after the role chunk is retried invisibly", provider: "up1", calls: 2, attempts: `"attempts":2`,
			first: func(n int32, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					sseOK(w, roleChunk, `data: {"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`+"\n\n")
					return
				}
				sseOK(w, roleChunk, helloChunk, stopChunk)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, url1 := countingUpstream(t, func(n int32, w http.ResponseWriter, r *http.Request) {
				if tc.first != nil {
					tc.first(n, w, r)
				}
			})
			if tc.deadURL {
				url1 = dead
			}
			_, url2 := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
				sseOK(w, roleChunk, helloChunk, stopChunk)
			})
			h := newHarness(t, routesConfig(url1, url2, ""))
			_, raw, evs := h.streamNative(t, `{"model":"resilient","prompt":"hi"}`)
			if len(evs) != 3 || evs[0].Provider != tc.provider || evs[1].Content != "hello" || evs[2].Type != "done" {
				t.Fatalf("events %+v", raw)
			}
			if !tc.deadURL && calls.Load() != tc.calls {
				t.Errorf("first upstream called %d times, want %d", calls.Load(), tc.calls)
			}
			h.logs.waitFor(t, tc.attempts)
		})
	}
}

func TestNoRetry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream func(w http.ResponseWriter)
		check    func(t *testing.T, h *harness)
	}{
		{"400 is the client's", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":{"message":"bad","type":"invalid_request_error","code":"bad_param"}}`)
		}, func(t *testing.T, h *harness) {
			resp := h.post(t, context.Background(), "/v1/stream", `{"model":"resilient","prompt":"hi"}`)
			if resp.StatusCode != 400 {
				t.Errorf("status %d", resp.StatusCode)
			}
			readError(t, resp)
		}},
		{"failure after a delta", func(w http.ResponseWriter) {
			sseOK(w, roleChunk, helloChunk, `data: {"error":{"message":"boom","type":"server_error","code":"server_error"}}`+"\n\n")
		}, func(t *testing.T, h *harness) {
			_, _, evs := h.streamNative(t, `{"model":"resilient","prompt":"hi"}`)
			if last := evs[len(evs)-1]; last.Type != "error" || evs[1].Content != "hello" {
				t.Errorf("events %+v", evs)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, url1 := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) { tc.upstream(w) })
			calls2, url2 := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) { sseOK(w, roleChunk, helloChunk, stopChunk) })
			h := newHarness(t, routesConfig(url1, url2, ""))
			tc.check(t, h)
			if calls.Load() != 1 || calls2.Load() != 0 {
				t.Errorf("upstream calls: %d and %d, want 1 and 0", calls.Load(), calls2.Load())
			}
		})
	}
}

func TestAttemptsCapped(t *testing.T) {
	calls, url1 := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", 502)
	})
	h := newHarness(t, newConfig(fmt.Sprintf("  up1:\n    type: openai\n    base_url: %s/v1\n", url1), "  resilient:\n    routes:\n      - provider: up1\n"),
		func(c *config.Config) { c.Retry.AttemptsPerRoute, c.Retry.MaxAttempts = 3, 3 })
	resp := h.post(t, context.Background(), "/v1/stream", `{"model":"resilient","prompt":"hi"}`)
	if resp.StatusCode != 502 {
		t.Errorf("status %d", resp.StatusCode)
	}
	readError(t, resp)
	if calls.Load() != 3 {
		t.Errorf("%d attempts, want 3", calls.Load())
	}
}

func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name, setting, code string
		frames              []string
		text                string
	}{
		{"first token", "first_token_timeout", "upstream_first_token_timeout", []string{roleChunk}, ""},
		{"idle", "idle_timeout", "upstream_idle_timeout", []string{roleChunk, helloChunk}, "hello"},
		// Deltas after the first move the timer when the stream next waits.
		{"idle after deltas", "idle_timeout", "upstream_idle_timeout", []string{roleChunk, helloChunk, helloChunk, helloChunk}, "hellohellohello"},
		{"whole stream", "stream_timeout", "upstream_stream_timeout", []string{roleChunk, helloChunk}, "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
				sseOK(w, tc.frames...)
				<-r.Context().Done() // then silence
			})
			h := newHarness(t, newConfig(fmt.Sprintf("  up1:\n    type: openai\n    base_url: %s/v1\n    %s: 50ms\n", url, tc.setting),
				"  resilient:\n    routes:\n      - provider: up1\n"), func(c *config.Config) { c.Retry.MaxAttempts = 1 })
			_, _, evs := h.streamNative(t, `{"model":"resilient","prompt":"hi"}`)
			last := evs[len(evs)-1]
			var text strings.Builder
			for _, ev := range evs {
				text.WriteString(ev.Content)
			}
			if last.Type != "error" || last.Error.Code != tc.code || text.String() != tc.text {
				t.Errorf("events %+v (last error %+v)", evs, last.Error)
			}
		})
	}
}

// TestIdleTimeoutMovesWithDeltas: a stream whose deltas keep coming
// within the idle timeout is never cut by it, however long it lasts in
// all. The timer moves when the stream waits for the network, not at each
// delta; this fails if it does not move at all.
func TestIdleTimeoutMovesWithDeltas(t *testing.T) {
	const deltas = 12
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		sseOK(w, roleChunk)
		rc := http.NewResponseController(w)
		for range deltas {
			// The pace is what is tested: 60 ms apart, 720 ms in all,
			// against an idle timeout of 300 ms.
			select {
			case <-time.After(60 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
			_, _ = io.WriteString(w, helloChunk)
			_ = rc.Flush()
		}
		_, _ = io.WriteString(w, stopChunk)
	})
	h := newHarness(t, newConfig(fmt.Sprintf("  up1:\n    type: openai\n    base_url: %s/v1\n    idle_timeout: 300ms\n", url),
		"  resilient:\n    routes:\n      - provider: up1\n"), func(c *config.Config) { c.Retry.MaxAttempts = 1 })
	_, _, evs := h.streamNative(t, `{"model":"resilient","prompt":"hi"}`)
	got := 0
	for _, ev := range evs {
		if ev.Content == "hello" {
			got++
		}
	}
	if last := evs[len(evs)-1]; last.Type != "done" || got != deltas {
		t.Errorf("%d deltas, last event %+v (error %+v); want %d and done", got, last, last.Error, deltas)
	}
}

// TestFirstTokenTimeoutEndsAtTheFirstDelta: once a delta arrived, the
// first-token timeout no longer applies: the same timer goes on as the
// idle timer (upstream.Stream.firstDelta), so a pause longer than the
// first-token timeout but shorter than the idle one does not cut the
// stream.
func TestFirstTokenTimeoutEndsAtTheFirstDelta(t *testing.T) {
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		sseOK(w, roleChunk, helloChunk)
		// Three first-token timeouts, well within the idle timeout.
		select {
		case <-time.After(300 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, helloChunk+stopChunk)
	})
	h := newHarness(t, newConfig(fmt.Sprintf("  up1:\n    type: openai\n    base_url: %s/v1\n    first_token_timeout: 100ms\n    idle_timeout: 5s\n", url),
		"  resilient:\n    routes:\n      - provider: up1\n"), func(c *config.Config) { c.Retry.MaxAttempts = 1 })
	_, _, evs := h.streamNative(t, `{"model":"resilient","prompt":"hi"}`)
	var text strings.Builder
	for _, ev := range evs {
		text.WriteString(ev.Content)
	}
	if last := evs[len(evs)-1]; last.Type != "done" || text.String() != "hellohello" {
		t.Errorf("text %q, last event %+v (error %+v); want hellohello and done", text.String(), last, last.Error)
	}
}

// TestFirstTokenTimeoutFallsBack: a deployment that does not answer in
// time is abandoned for the next route, and the client sees one stream.
func TestFirstTokenTimeoutFallsBack(t *testing.T) {
	_, slow := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		sseOK(w, roleChunk)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	_, fast := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) { sseOK(w, roleChunk, helloChunk, stopChunk) })
	h := newHarness(t, routesConfig(slow, fast, "    first_token_timeout: 50ms\n"), func(c *config.Config) { c.Retry.AttemptsPerRoute = 1 })
	_, _, evs := h.streamNative(t, `{"model":"resilient","prompt":"hi"}`)
	if len(evs) != 3 || evs[1].Content != "hello" || evs[2].Type != "done" {
		t.Errorf("events %+v", evs)
	}
}

// TestUsageCountedWhenUpstreamReportsNone: the gateway counts the tokens
// itself with the tokenizer and says the figure is estimated.
func TestUsageCountedWhenUpstreamReportsNone(t *testing.T) {
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		sseOK(w, roleChunk,
			`data: {"choices":[{"index":0,"delta":{"content":"Hello! How can"},"finish_reason":null}]}`+"\n\n",
			`data: {"choices":[{"index":0,"delta":{"content":" I help you today?"},"finish_reason":null}]}`+"\n\n",
			stopChunk)
	})
	h := newHarness(t, newConfig(fmt.Sprintf("  up1:\n    type: openai\n    base_url: %s/v1\n", url), "  resilient:\n    routes:\n      - provider: up1\n"))
	_, _, evs := h.streamNative(t, `{"model":"resilient","system":"be brief","prompt":"hello world"}`)
	done := evs[len(evs)-1]
	// o200k_base: the answer is 9 tokens (not 2 deltas); the prompt 15
	// (see internal/tokens).
	if !done.UsageEstimated || done.Usage.CompletionTokens != 9 || done.Usage.PromptTokens != 15 || done.Usage.TotalTokens != 24 {
		t.Errorf("done = %+v usage %+v", done, done.Usage)
	}
}

// TestLongLinesAndKeepAlives: hundreds of comment lines while a reasoning
// model thinks, then a 1 MiB delta, reach the client intact.
func TestLongLinesAndKeepAlives(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		frames := []string{roleChunk}
		for i := 0; i < 500; i++ {
			frames = append(frames, ": OPENROUTER PROCESSING\n\n")
		}
		frames = append(frames, `data: {"choices":[{"index":0,"delta":{"content":"`+big+`"},"finish_reason":null}]}`+"\n\n", stopChunk)
		sseOK(w, frames...)
	})
	h := newHarness(t, newConfig(fmt.Sprintf("  up1:\n    type: openai\n    base_url: %s/v1\n", url), "  resilient:\n    routes:\n      - provider: up1\n"),
		func(c *config.Config) { c.Server.MaxBodyBytes = 1 << 20 })
	_, _, evs := h.streamNative(t, `{"model":"resilient","prompt":"think"}`)
	if len(evs) != 3 || len(evs[1].Content) != len(big) || evs[2].Type != "done" {
		t.Errorf("%d events; delta of %d bytes; last %+v", len(evs), len(evs[1].Content), evs[len(evs)-1].Type)
	}
}

// TestConnectTimeoutCode: a dial that timed out has its own code (the error
// is built here: a real one would need a host that drops SYNs).
func TestConnectTimeoutCode(t *testing.T) {
	e := failure.Classify(context.Background(), &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}})
	if e.Status != 504 || e.Code != "upstream_connect_timeout" {
		t.Errorf("dial timeout classified as %d %s", e.Status, e.Code)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
