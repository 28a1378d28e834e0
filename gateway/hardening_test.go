package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/relay"
)

// TestMaxTokensCannotOverflowTheBudget: a max_tokens near the largest
// integer once wrapped the reservation round to a negative number, was
// admitted whatever the budget, and drove the key's bucket to -9e18. It
// is refused; the key's next request is served, and a refusal always
// carries a positive Retry-After.
func TestMaxTokensCannotOverflowTheBudget(t *testing.T) {
	h := newHarness(t, keysConfig("      tokens_per_minute: 3000"))
	for _, n := range []string{"9223372036854775807", "1048577", "-1"} {
		resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, `{"model":"mock-gpt","prompt":"hi","max_tokens":`+n+`}`)
		eb := readError(t, resp)
		if resp.StatusCode != 400 || eb.Error.Code != "invalid_value" || eb.Error.Param == nil || *eb.Error.Param != "max_tokens" {
			t.Errorf("max_tokens %s: %d %+v", n, resp.StatusCode, eb.Error)
		}
	}
	if resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, `{"model":"mock-gpt","prompt":"hi","max_tokens":100}`); resp.StatusCode != 200 {
		t.Fatalf("the key's next request: %d %s", resp.StatusCode, drainClose(resp))
	} else {
		drainClose(resp)
	}
	// More than the minute's budget can ever hold: 429, told when to come
	// back, never without or with a negative Retry-After.
	resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, `{"model":"mock-gpt","prompt":"hi","max_tokens":5000}`)
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 429 || err != nil || ra < 1 {
		t.Errorf("over the budget: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	drainClose(resp)
}

// TestToolCallIndexBounded: an upstream's tool-call index of -1 panicked
// the non-stream path and 3,000,000 allocated 600 MB; both are a malformed
// upstream, on both paths.
func TestToolCallIndexBounded(t *testing.T) {
	for _, index := range []string{"-1", "3000000"} {
		call := `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":` + index + `,"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":null}]}` + "\n\n"
		_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) { sseOK(w, roleChunk, call, stopChunk) })
		p, m := openAIUpstream(url, "sk-test-0123456789")
		h := newHarness(t, newConfig(p, m), func(c *config.Config) { c.Retry.MaxAttempts = 1 })
		resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"up-model","messages":[{"role":"user","content":"x"}]}`)
		if eb := readError(t, resp); resp.StatusCode != 502 || eb.Error.Code != "upstream_malformed" {
			t.Errorf("index %s, stream false: %d %+v", index, resp.StatusCode, eb.Error)
		}
		resp = h.post(t, context.Background(), "/v1/chat/completions", `{"model":"up-model","stream":true,"messages":[{"role":"user","content":"x"}]}`)
		frames := newSSEReader(resp.Body).readAll(t)
		resp.Body.Close()
		if last := frames[len(frames)-1].Data; !strings.Contains(last, `"code":"upstream_malformed"`) {
			t.Errorf("index %s, streamed: last frame %q", index, last)
		}
	}
}

// TestMockDirectivesOff: a mock whose config does not turn directives on
// treats "[mock ...]" as plain text, so no client can make it stream a
// hundred million tokens or stall.
func TestMockDirectivesOff(t *testing.T) {
	h := newHarness(t, newConfig("", ""), func(c *config.Config) { c.Providers["mock"].Mock.Directives = false })
	_, _, evs := h.streamNative(t, `{"model":"mock-gpt","prompt":"[mock tokens=100000000 stall_after=1]"}`)
	if len(evs) != 7 || evs[6].Type != "done" || evs[6].Usage.CompletionTokens != 5 {
		t.Errorf("directive obeyed with directives off: %d events, last %+v", len(evs), evs[len(evs)-1])
	}
}

// TestEchoedValuesTruncated: unknown model names and paths were echoed
// whole into the error and the log line.
func TestEchoedValuesTruncated(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	long := strings.Repeat("m", 3000)
	resp := h.post(t, context.Background(), "/v1/stream", `{"model":"`+long+`","prompt":"x"}`)
	if eb := readError(t, resp); resp.StatusCode != 404 || len(eb.Error.Message) > 300 || !strings.Contains(eb.Error.Message, "...") {
		t.Errorf("unknown model: %d, message of %d bytes", resp.StatusCode, len(eb.Error.Message))
	}
	path := "/v1/" + strings.Repeat("p", 100000)
	resp = h.do(t, context.Background(), "GET", path, "", "")
	if eb := readError(t, resp); resp.StatusCode != 404 || len(eb.Error.Message) > 300 {
		t.Errorf("long path: %d, message of %d bytes", resp.StatusCode, len(eb.Error.Message))
	}
	h.logs.waitFor(t, `"status":404`)
	for _, line := range strings.Split(h.logs.String(), "\n") {
		if len(line) > 2000 {
			t.Errorf("a log line of %d bytes: %.200s...", len(line), line)
		}
	}
}

// TestBrowserPagesCannotDriveALocalGateway: with auth off on loopback, a
// page a developer visits could post to the gateway (no Content-Type, so
// no preflight) or reach it through DNS rebinding. A body without a JSON
// Content-Type, a foreign Host and a foreign Origin are each refused; the
// gateway's own pages and allowed origins work.
func TestBrowserPagesCannotDriveALocalGateway(t *testing.T) {
	h := newHarness(t, newConfig("", ""), func(c *config.Config) {
		c.Server.CORS.AllowedOrigins = []string{"https://app.example"}
	})
	body := `{"model":"mock-gpt","prompt":"x"}`
	req, _ := http.NewRequest("POST", h.http.URL+"/v1/stream", strings.NewReader(body))
	resp, err := h.http.Client().Do(req) // no Content-Type
	if err != nil {
		t.Fatal(err)
	}
	if eb := readError(t, resp); resp.StatusCode != 415 || eb.Error.Code != "unsupported_media_type" {
		t.Errorf("no Content-Type: %d %+v", resp.StatusCode, eb.Error)
	}
	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
		code   string
	}{
		{"rebound host", []string{"Host", "attacker.example"}, 421, "host_not_allowed"},
		{"foreign origin", []string{"Origin", "https://attacker.example"}, 403, "origin_not_allowed"},
		{"null origin", []string{"Origin", "null"}, 403, "origin_not_allowed"},
		{"allowed origin", []string{"Origin", "https://app.example"}, 200, ""},
		{"own origin", []string{"Origin", h.http.URL}, 200, ""},
		{"localhost", []string{"Host", "localhost:8080"}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", h.http.URL+"/v1/stream", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if tc.hdr[0] == "Host" {
				req.Host = tc.hdr[1]
			} else {
				req.Header.Set(tc.hdr[0], tc.hdr[1])
			}
			resp, err := h.http.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == 200 {
				if resp.StatusCode != 200 {
					t.Errorf("status %d: %s", resp.StatusCode, drainClose(resp))
				} else {
					drainClose(resp)
				}
				return
			}
			if eb := readError(t, resp); resp.StatusCode != tc.status || eb.Error.Code != tc.code {
				t.Errorf("%d %+v", resp.StatusCode, eb.Error)
			}
		})
	}
}

// TestAdminNeedsAnAdminKey: a key limited to some models saw every model
// and upstream name in /admin/deployments.
func TestAdminNeedsAnAdminKey(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 600"), func(c *config.Config) {
		k := c.Keys["batch"]
		k.Admin = true
		c.Keys["batch"] = k
	})
	resp := h.do(t, context.Background(), "GET", "/admin/deployments", frontendKey, "")
	if eb := readError(t, resp); resp.StatusCode != 403 || eb.Error.Code != "admin_key_required" {
		t.Errorf("a key without admin: %d %+v", resp.StatusCode, eb.Error)
	}
	if resp := h.do(t, context.Background(), "GET", "/admin/deployments", batchKey, ""); resp.StatusCode != 200 {
		t.Errorf("the admin key: %d", resp.StatusCode)
	} else {
		drainClose(resp)
	}
}

// TestShortKeysAreNotRedacted: a local server's one-letter key was
// replaced everywhere in upstream messages ("ma[REDACTED]imum").
func TestShortKeysAreNotRedacted(t *testing.T) {
	const msg = "This model's maximum context length is 10 tokens"
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error","code":"context_length_exceeded"}}`, msg)
	})
	p, m := openAIUpstream(url, "x")
	h := newHarness(t, newConfig(p, m))
	resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"up-model","messages":[{"role":"user","content":"x"}]}`)
	if eb := readError(t, resp); eb.Error.Message != msg {
		t.Errorf("message %q, want %q", eb.Error.Message, msg)
	}
}

// TestUsageOnEveryEnding: a stream that ended by the client leaving was
// logged with 0 tokens and never settled what it generated.
func TestUsageOnEveryEnding(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.post(t, ctx, "/v1/chat/completions", `{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"tell me [mock tokens=50 stall_after=3]"}]}`)
	sr := newSSEReader(resp.Body)
	for deltas := 0; deltas < 4; { // the role chunk, then three tokens
		if _, err := sr.next(); err != nil {
			t.Fatal(err)
		}
		deltas++
	}
	cancel()
	resp.Body.Close()
	h.logs.waitFor(t, `"end":"client_gone"`)
	if v := h.metric(t, "gateway_tokens_total", "kind", "completion"); v < 3 {
		t.Errorf("completion tokens counted after the client left: %v, want the 3 generated", v)
	}
	if m := regexp.MustCompile(`"completion_tokens":(\d+),[^\n]*"end":"client_gone"`).FindStringSubmatch(h.logs.String()); m == nil || atoi(m[1]) < 3 {
		t.Errorf("the access log has no usage for the stream cut short:\n%s", h.logs.String())
	}
}

// TestErrorsInTheClientsTerms: messages named Go types
// ("gateway.streamRequest") and param was always null.
func TestErrorsInTheClientsTerms(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	for _, tc := range []struct{ body, param, want string }{
		{`[1,2]`, "", "the request body must be a JSON object, not an array"},
		{`{"model":5,"prompt":"x"}`, "model", "model must be a string, not a number"},
		{`{"model":"mock-gpt","prompt":"x","max_tokens":"many"}`, "max_tokens", "max_tokens must be an integer, not a string"},
		{`{"model":"mock-gpt","prompt":"x","named_events":"yes"}`, "named_events", "named_events must be a boolean, not a string"},
		{`{"prompt":"x"}`, "model", "model is required"},
		{`{"model":"mock-gpt","prompt":"x","temprature":1}`, "temprature", `unknown field "temprature" (check its spelling)`},
		{`{"model":"mock-gpt","messages":[{"role":"robot","content":"y"}]}`, "messages[0].role", `messages[0].role "robot" is not one of system, developer, user, assistant, tool`},
	} {
		eb := readError(t, h.post(t, context.Background(), "/v1/stream", tc.body))
		param := ""
		if eb.Error.Param != nil {
			param = *eb.Error.Param
		}
		if eb.Error.Message != tc.want || param != tc.param || strings.Contains(eb.Error.Message, "gateway.") {
			t.Errorf("%s: message %q param %q; want %q param %q", tc.body, eb.Error.Message, param, tc.want, tc.param)
		}
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// createStream starts a detached stream (POST /v1/streams) and returns
// its events URL.
func (h *harness) createStream(t *testing.T, prompt string) string {
	t.Helper()
	resp := h.post(t, context.Background(), "/v1/streams", `{"model":"mock-gpt","prompt":"`+prompt+`"}`)
	body := drainClose(resp)
	var created struct {
		EventsURL string `json:"events_url"`
	}
	if err := json.Unmarshal([]byte(body), &created); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/streams: %d %s", resp.StatusCode, body)
	}
	return created.EventsURL
}

// TestStreamReadersAreLimited: one admitted stream could be read by 60
// connections at once and replayed without end. Readers count against
// the client's concurrent streams and request rate, and a stream takes
// streams.max_readers at most; past any of them, 429 with Retry-After.
func TestStreamReadersAreLimited(t *testing.T) {
	refused := func(t *testing.T, resp *http.Response, code string) {
		t.Helper()
		eb := readError(t, resp)
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != 429 || eb.Error.Code != code || err != nil || ra < 1 {
			t.Errorf("got %d %s (Retry-After %q), want 429 %s", resp.StatusCode, eb.Error.Code, resp.Header.Get("Retry-After"), code)
		}
	}
	follow := func(t *testing.T, h *harness, ctx context.Context, url string) {
		t.Helper()
		resp := h.openEvents(t, ctx, url)
		if resp.StatusCode != 200 {
			t.Fatalf("reader: %d %s", resp.StatusCode, drainClose(resp))
		}
		t.Cleanup(func() { resp.Body.Close() })
		events(t, newSSEReader(resp.Body), 2) // connected and the first delta
	}
	t.Run("readers of a stream", func(t *testing.T) {
		h := newHarness(t, newConfig("", "")+"streams:\n  max_readers: 2\n")
		url := h.createStream(t, "[mock tokens=50 stall_after=1]")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		follow(t, h, ctx, url)
		follow(t, h, ctx, url)
		refused(t, h.openEvents(t, ctx, url), "too_many_stream_readers")
	})
	t.Run("concurrent streams", func(t *testing.T) {
		h := newHarness(t, newConfig("", "")+"rate_limit:\n  defaults:\n    concurrent_streams: 2\n")
		url := h.createStream(t, "[mock tokens=50 stall_after=1]") // the generation holds one
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		follow(t, h, ctx, url)
		refused(t, h.openEvents(t, ctx, url), "concurrency_limit_exceeded")
	})
	t.Run("replays", func(t *testing.T) {
		h := newHarness(t, newConfig("", "")+"rate_limit:\n  defaults:\n    requests_per_minute: 3\n    burst: 3\n")
		url := h.createStream(t, "hi")
		h.replay(t, url)
		h.replay(t, url)
		refused(t, h.openEvents(t, context.Background(), url), "rate_limit_exceeded")
	})
}

// TestWholeAnswerBounded: a stream: false answer was kept whole, however
// large (52 MB built, RSS 31 → 232 MB); past the bound it is a 502 that
// says why.
func TestWholeAnswerBounded(t *testing.T) {
	chunk := `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", 64<<10) + `"},"finish_reason":null}]}` + "\n\n"
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		writeSSE(w, roleChunk)
		for range (relay.MaxAnswerBytes >> 16) + 2 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return // the gateway gave up, as it should
			}
		}
		writeSSE(w, stopChunk)
	})
	p, m := openAIUpstream(url, "sk-test-0123456789")
	h := newHarness(t, newConfig(p, m), func(c *config.Config) { c.Retry.MaxAttempts = 1 })
	resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"up-model","messages":[{"role":"user","content":"x"}]}`)
	if eb := readError(t, resp); resp.StatusCode != 502 || eb.Error.Code != "upstream_answer_too_large" {
		t.Errorf("%d %+v", resp.StatusCode, eb.Error)
	}
}

// TestMetricsKeptPrivate: /metrics names keys, models and providers; it
// can require a bearer token, and move to an address of its own.
func TestMetricsKeptPrivate(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		h := newHarness(t, newConfig("", ""), func(c *config.Config) { c.Server.Metrics.Token = "metrics-secret-123" })
		if resp := h.do(t, context.Background(), "GET", "/metrics", "", ""); resp.StatusCode != 401 {
			t.Errorf("without the token: %d", resp.StatusCode)
		} else {
			drainClose(resp)
		}
		if resp := h.do(t, context.Background(), "GET", "/metrics", "wrong-token", ""); resp.StatusCode != 401 {
			t.Errorf("with a wrong token: %d", resp.StatusCode)
		} else {
			drainClose(resp)
		}
		resp := h.do(t, context.Background(), "GET", "/metrics", "metrics-secret-123", "")
		if body := drainClose(resp); resp.StatusCode != 200 || !strings.Contains(body, "gateway_requests_total") {
			t.Errorf("with the token: %d", resp.StatusCode)
		}
	})
	t.Run("own listener", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		url, stop, wait := serving(t, newConfig("", ""), func(c *config.Config) { c.Server.Metrics.Listen = addr })
		defer func() { stop(); _ = wait() }()
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if drainClose(resp); resp.StatusCode != 404 {
			t.Errorf("/metrics on the main listener: %d", resp.StatusCode)
		}
		// The main listener answered, so Serve runs: it listened for
		// metrics before it began serving.
		resp, err = http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if body := drainClose(resp); resp.StatusCode != 200 || !strings.Contains(body, "gateway_requests_total") {
			t.Errorf("/metrics on its own listener: %d %s", resp.StatusCode, body)
		}
	})
}

// slowBody opens a connection that sends a request's headers and the
// first bytes of its body, then nothing: a client trickling its body.
func (h *harness) slowBody(t *testing.T, length int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", h.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = fmt.Fprintf(conn, "POST /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"model\":", length)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// waitInProgress waits until n requests are in progress (past their
// headers), as /metrics reports.
func (h *harness) waitInProgress(t *testing.T, n float64) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(10 * time.Second)
	for h.metric(t, "gateway_requests_in_progress") != n {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("never %v requests in progress", n)
		}
	}
}

// TestSlowBodies: one client IP held 150 connections, each with about a
// megabyte of body on its way, 216 MB of heap, and never reached its
// concurrency limit: admission came after the body. Reading a body is
// bounded in time, counts against the client's concurrency from its
// headers on, and all bodies being read share a memory budget.
func TestSlowBodies(t *testing.T) {
	t.Run("body timeout", func(t *testing.T) {
		h := newHarness(t, newConfig("", ""), func(c *config.Config) { c.Server.BodyTimeout = config.Duration(50 * time.Millisecond) })
		conn := h.slowBody(t, 100)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, h.logs.String())
		}
		if eb := readError(t, resp); resp.StatusCode != 408 || eb.Error.Code != "body_timeout" {
			t.Errorf("%d %+v", resp.StatusCode, eb.Error)
		}
	})
	t.Run("a stream outlives the body timeout", func(t *testing.T) {
		h := newHarness(t, newConfig("", ""), func(c *config.Config) { c.Server.BodyTimeout = config.Duration(50 * time.Millisecond) })
		for _, tc := range []struct{ path, body string }{
			{"/v1/stream", `{"model":"mock-gpt","prompt":"[mock tokens=5 delay=40ms]"}`},
			{"/v1/chat/completions", `{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"[mock tokens=5 delay=40ms]"}]}`},
		} {
			resp := h.post(t, context.Background(), tc.path, tc.body)
			frames := newSSEReader(resp.Body).readAll(t)
			resp.Body.Close()
			if last := frames[len(frames)-1].Data; !strings.Contains(last, `"type":"done"`) && last != "[DONE]" {
				t.Errorf("%s: a 200ms stream under a 50ms body timeout ended %q", tc.path, last)
			}
		}
	})
	t.Run("concurrency from the headers on", func(t *testing.T) {
		h := newHarness(t, newConfig("", "")+"rate_limit:\n  defaults:\n    concurrent_streams: 2\n")
		h.slowBody(t, 100)
		h.slowBody(t, 100)
		h.waitInProgress(t, 2)
		resp := h.post(t, context.Background(), "/v1/stream", `{"model":"mock-gpt","prompt":"x"}`)
		if eb := readError(t, resp); resp.StatusCode != 429 || eb.Error.Code != "concurrency_limit_exceeded" || resp.Header.Get("Retry-After") == "" {
			t.Errorf("a third request while two bodies trickle in: %d %+v", resp.StatusCode, eb.Error)
		}
	})
	t.Run("memory of bodies being read", func(t *testing.T) {
		h := newHarness(t, newConfig("", ""), func(c *config.Config) { c.Server.MaxPendingBodyBytes = 2 * c.Server.MaxBodyBytes })
		h.slowBody(t, 4096)
		h.slowBody(t, 4096)
		h.waitInProgress(t, 2)
		resp := h.post(t, context.Background(), "/v1/stream", `{"model":"mock-gpt","prompt":"x"}`)
		if eb := readError(t, resp); resp.StatusCode != 503 || eb.Error.Code != "server_busy" || resp.Header.Get("Retry-After") == "" {
			t.Errorf("a body past the budget: %d %+v", resp.StatusCode, eb.Error)
		}
		// A request without a body needs none of the budget.
		if resp := h.do(t, context.Background(), "GET", "/v1/models", "", ""); resp.StatusCode != 200 {
			t.Errorf("GET /v1/models: %d", resp.StatusCode)
		} else {
			drainClose(resp)
		}
	})
}
