package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/limit"
)

const (
	frontendKey = "sk-gw-frontend-0123456789"
	batchKey    = "sk-gw-batch-abcdefghijkl"
)

// keysConfig has two keys: frontend (mock-gpt only, tight limits) and
// batch (stored as a hash, every model).
func keysConfig(limits string) string {
	sum := config.Key{Key: config.Secret(batchKey)}.Digest()
	return strings.Replace(newConfig("", `  other-model:
    routes:
      - provider: mock
`), "auth:\n  enabled: false\n", fmt.Sprintf(`auth:
  enabled: true
keys:
  frontend:
    key: %s
    models: [mock-gpt]
    limits:
%s
  batch:
    key_sha256: %s
`, frontendKey, limits, sum), 1)
}

func (h *harness) do(t *testing.T, ctx context.Context, method, path, key, body string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, h.http.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func drainClose(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

const streamBody = `{"model":"mock-gpt","prompt":"hi [mock tokens=3]"}`

func TestAuth(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 600"))
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"no key", nil, 401},
		{"unknown key", []string{"Authorization", "Bearer sk-nope"}, 401},
		{"wrong scheme", []string{"Authorization", "Basic " + frontendKey}, 401},
		{"bearer", []string{"Authorization", "Bearer " + frontendKey}, 200},
		{"x-api-key", []string{"x-api-key", frontendKey}, 200},
		{"hashed key", []string{"Authorization", "Bearer " + batchKey}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, context.Background(), "POST", "/v1/stream", "", streamBody, tc.hdr...)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.want, drainClose(resp))
				return
			}
			if tc.want == 401 {
				if eb := readError(t, resp); eb.Error.Code != "invalid_api_key" || resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 body %+v", eb)
				}
				return
			}
			drainClose(resp)
		})
	}
	if resp := h.do(t, context.Background(), "GET", "/healthz", "", ""); resp.StatusCode != 200 {
		t.Errorf("/healthz needs auth: %d", resp.StatusCode)
	} else {
		drainClose(resp)
	}
	if resp := h.do(t, context.Background(), "GET", "/v1/models", "", ""); resp.StatusCode != 401 {
		t.Errorf("/v1/models without a key: %d", resp.StatusCode)
	} else {
		drainClose(resp)
	}
	logs := h.logs.String()
	if strings.Contains(logs, frontendKey) || strings.Contains(logs, batchKey) || !strings.Contains(logs, `"key":"frontend"`) {
		t.Errorf("logs must name keys, never hold them:\n%s", logs)
	}
}

func TestModelNotAllowed(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 600"))
	// A model the key may not use is as absent as one that does not
	// exist: the key cannot tell them apart.
	resp := h.do(t, context.Background(), "POST", "/v1/chat/completions", frontendKey, `{"model":"other-model","messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 404 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	eb := readError(t, resp)
	missing := readError(t, h.do(t, context.Background(), "POST", "/v1/chat/completions", frontendKey, `{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}`))
	if eb.Error.Code != "model_not_found" || strings.ReplaceAll(eb.Error.Message, "other-model", "X") != strings.ReplaceAll(missing.Error.Message, "no-such-model", "X") {
		t.Errorf("not allowed %+v, missing %+v", eb.Error, missing.Error)
	}
	for key, want := range map[string]string{frontendKey: `"id":"mock-gpt"`, batchKey: `"id":"other-model"`} {
		body := drainClose(h.do(t, context.Background(), "GET", "/v1/models", key, ""))
		if !strings.Contains(body, want) || (key == frontendKey && strings.Contains(body, "other-model")) {
			t.Errorf("models for %s: %s", key[:10], body)
		}
	}
}

// fireAtOnce sends n stream requests released together, the i-th to
// pick(i), and returns the responses (bodies read and closed).
func fireAtOnce(t *testing.T, n int, pick func(i int) *harness) []*http.Response {
	var wg sync.WaitGroup
	resps := make([]*http.Response, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resps[i] = pick(i).do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
			drainClose(resps[i])
		}()
	}
	close(start)
	wg.Wait()
	return resps
}

func countStatuses(resps []*http.Response) map[int]int {
	m := map[int]int{}
	for _, r := range resps {
		m[r.StatusCode]++
	}
	return m
}

// TestBurstAdmitsExactlyN fires 20 requests at once at a burst of 5.
func TestBurstAdmitsExactlyN(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 60\n      burst: 5"))
	resps := fireAtOnce(t, 20, func(int) *harness { return h })
	statuses := countStatuses(resps)
	var retryAfter []string
	for _, r := range resps {
		if r.StatusCode == 429 {
			retryAfter = append(retryAfter, r.Header.Get("Retry-After"))
		}
	}
	if statuses[200] != 5 || statuses[429] != 15 {
		t.Fatalf("statuses %v, want 5×200 and 15×429", statuses)
	}
	for _, ra := range retryAfter {
		if n, err := strconv.Atoi(ra); err != nil || n < 1 || n > 2 {
			t.Errorf("Retry-After %q, want 1 or 2 seconds", ra)
		}
	}
}

func TestRateLimitHeaders(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 60\n      burst: 3\n      tokens_per_minute: 6000\n      default_max_tokens: 100"))
	resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
	drainClose(resp)
	for k, want := range map[string]string{
		"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "1s",
		"x-ratelimit-limit-tokens": "6000",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	// Reserved: 4 prompt (chars/4) + 100 default max_tokens.
	if got := resp.Header.Get("x-ratelimit-remaining-tokens"); got != "5896" {
		t.Errorf("x-ratelimit-remaining-tokens = %q, want 5896", got)
	}
}

// TestSlotsReleased: one stream at a time, released however the stream
// ends.
func TestSlotsReleased(t *testing.T) {
	h := newHarness(t, keysConfig("      concurrent_streams: 1"))
	for _, prompt := range []string{"done [mock tokens=2]", "error [mock fail_after=1]"} {
		drainClose(h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, `{"model":"mock-gpt","prompt":"`+prompt+`"}`))
	}
	// A stream in flight holds the slot...
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.do(t, ctx, "POST", "/v1/stream", frontendKey, `{"model":"mock-gpt","prompt":"[mock stall_after=0]"}`)
	if _, err := newSSEReader(resp.Body).next(); err != nil {
		t.Fatal(err)
	}
	if busy := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody); busy.StatusCode != 429 {
		t.Fatalf("second stream admitted: %d", busy.StatusCode)
	} else if eb := readError(t, busy); eb.Error.Code != "concurrency_limit_exceeded" {
		t.Errorf("code %q", eb.Error.Code)
	}
	// ...until the client leaves. The access-log line (not the
	// producer's "stream finished", which comes before the handler has
	// returned) is written once the request is over and all it held is
	// released.
	cancel()
	resp.Body.Close()
	h.logs.waitFor(t, `"end":"client_gone","error_code":"client_closed_request"`)
	if again := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody); again.StatusCode != 200 {
		t.Errorf("slot not released after disconnect: %d %s", again.StatusCode, drainClose(again))
	} else {
		drainClose(again)
	}
}

// TestTokensChargedFromUsage: the reservation is settled with the real
// usage, so a budget that could not hold two reservations holds many
// small answers.
func TestTokensChargedFromUsage(t *testing.T) {
	h := newHarness(t, keysConfig("      tokens_per_minute: 300\n      default_max_tokens: 200"))
	for i := 0; i < 5; i++ {
		resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
		body := drainClose(resp)
		if resp.StatusCode != 200 || !strings.Contains(body, `"type":"done"`) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// Each used 3 prompt + 3 completion tokens; 5×6 = 30 of 300 spent, so
	// about 270 remain before this request's reservation of 204.
	resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
	drainClose(resp)
	if n, _ := strconv.Atoi(resp.Header.Get("x-ratelimit-remaining-tokens")); n < 60 || n > 70 {
		t.Errorf("remaining tokens %d, want about 66 (300 - 30 used - 204 reserved)", n)
	}
	if resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, `{"model":"mock-gpt","prompt":"x","max_tokens":5000}`); resp.StatusCode != 429 {
		t.Errorf("a request over the whole budget: %d", resp.StatusCode)
	} else if eb := readError(t, resp); eb.Error.Code != "tokens_rate_limit_exceeded" {
		t.Errorf("code %q", eb.Error.Code)
	}
}

func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		want    int // status of the second request, from "another" client
	}{
		{"untrusted", nil, 429},
		{"trusted", []string{"127.0.0.1"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newConfig("", ""), func(c *config.Config) {
				one := 1
				c.RateLimit.Defaults = config.Limits{RequestsPerMinute: &one}
				c.Auth.TrustedProxies = tc.trusted
			})
			drainClose(h.do(t, context.Background(), "POST", "/v1/stream", "", streamBody, "X-Forwarded-For", "203.0.113.1"))
			resp := h.do(t, context.Background(), "POST", "/v1/stream", "", streamBody, "X-Forwarded-For", "203.0.113.2")
			drainClose(resp)
			if resp.StatusCode != tc.want {
				t.Errorf("second client: %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestClientStateBounded(t *testing.T) {
	h := newHarness(t, newConfig("", ""), func(c *config.Config) {
		one := 1
		c.RateLimit.Defaults = config.Limits{RequestsPerMinute: &one}
		c.RateLimit.MaxClients = 50
		c.Auth.TrustedProxies = []string{"127.0.0.1"}
	})
	for i := 0; i < 300; i++ {
		resp := h.do(t, context.Background(), "POST", "/v1/stream", "", `{"model":"mock-gpt","prompt":"[mock tokens=1]"}`, "X-Forwarded-For", fmt.Sprintf("198.51.%d.%d", i/250, i%250))
		if body := drainClose(resp); resp.StatusCode != 200 {
			t.Fatalf("client %d: %d %s", i, resp.StatusCode, body)
		}
	}
	if n := h.srv.store.(*limit.Memory).Len(); n > 50+1 {
		t.Errorf("%d clients tracked, limit 50", n)
	}
}

func TestProviderPacing(t *testing.T) {
	h := newHarness(t, newConfig("", ""), func(c *config.Config) {
		p := c.Providers["mock"]
		p.RequestsPerSecond, p.QueueTimeout = 0.5, config.Duration(1)
		c.Providers["mock"] = p
		c.Models["mock-gpt"] = config.Model{Routes: []config.Route{{Provider: "mock"}}}
	}, func(c *config.Config) {})
	drainClose(h.do(t, context.Background(), "POST", "/v1/stream", "", streamBody))
	resp := h.do(t, context.Background(), "POST", "/v1/stream", "", streamBody)
	if resp.StatusCode != 429 {
		t.Fatalf("second request within the provider's pace: %d", resp.StatusCode)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra != 2 {
		t.Errorf("Retry-After %q, want 2", resp.Header.Get("Retry-After"))
	}
	if eb := readError(t, resp); eb.Error.Code != "provider_queue_full" {
		t.Errorf("code %q", eb.Error.Code)
	}
}
