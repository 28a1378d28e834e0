package gateway

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/streamgate/gateway/internal/redistest"
	"github.com/streamgate/gateway/internal/tokens"
	"github.com/streamgate/gateway/providers"
)

// heldUpstream answers every chat completion with a role chunk at once,
// then holds it until release is closed, and ends it reporting 10 prompt
// and 20 completion tokens.
type heldUpstream struct {
	url     string
	release chan struct{}
}

func newHeldUpstream(t *testing.T) *heldUpstream {
	u := &heldUpstream{release: make(chan struct{})}
	u.url = rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		sseOK(w, roleChunk)
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
		writeSSE(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`+"\n\ndata: [DONE]\n\n")
	}).URL
	return u
}

const budgetBody = `{"model":"up-model","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`

// budgetReserve is what budgetBody reserves at $1 per million tokens.
func budgetReserve() float64 {
	return float64(tokens.Approx([]providers.Message{{Role: "user", Content: "hi"}})+100) / 1e6
}

// budgetConfig serves up-model from url at $1 per million tokens, to key
// frontend with the given budget, limits in Redis at addr.
func budgetConfig(url, addr, budget string) string {
	p, m := openAIUpstream(url, "sk-test-0123456789")
	cfg := strings.Replace(newConfig(p, m), "auth:\n  enabled: false\n", fmt.Sprintf(`auth:
  enabled: true
keys:
  frontend:
    key: %s
    limits:
      budget: %s
`, frontendKey, budget), 1)
	cfg = strings.Replace(cfg, "  up-model:\n", "  up-model:\n    price: {input: 1, output: 1}\n", 1)
	return cfg + fmt.Sprintf("rate_limit:\n  backend: redis\n  redis:\n    addr: %s\n  failure_mode: fail_closed\n", addr)
}

// TestBudgetExactAcrossReplicas: a dollar budget of N requests' worst
// case, 3N requests at once over two replicas sharing Redis: exactly N
// stream, the others are refused 429 budget_exceeded saying when the
// budget resets; once they end, each is charged its real cost, which
// frees the rest of the budget, and the soft amount crossed is counted.
func TestBudgetExactAcrossReplicas(t *testing.T) {
	const n = 4
	up := newHeldUpstream(t)
	srv := redistest.Start(t)
	budget := fmt.Sprintf("{period: month, dollars: %v, soft_dollars: 0.00005}", n*budgetReserve())
	cfg := budgetConfig(up.url, srv.Addr, budget)
	both := []*harness{newHarness(t, cfg), newHarness(t, cfg)}

	var mu sync.Mutex
	var admitted []*http.Response
	var refused []*http.Response
	var wg sync.WaitGroup
	for i := range 3 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := both[i%2].do(t, context.Background(), "POST", "/v1/chat/completions", frontendKey, budgetBody)
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode == http.StatusOK {
				admitted = append(admitted, resp)
			} else {
				refused = append(refused, resp)
			}
		}()
	}
	wg.Wait()
	if len(admitted) != n {
		t.Fatalf("admitted %d of %d, want %d", len(admitted), 3*n, n)
	}
	for _, r := range refused {
		e := readError(t, r)
		if r.StatusCode != http.StatusTooManyRequests || e.Error.Code != "budget_exceeded" || !strings.Contains(e.Error.Message, "resets at") || r.Header.Get("Retry-After") == "" {
			t.Fatalf("refusal %d %+v (Retry-After %q)", r.StatusCode, e, r.Header.Get("Retry-After"))
		}
	}
	close(up.release)
	for _, r := range admitted {
		drainClose(r)
	}
	// Charged 30 tokens each: a worst case of 100-odd fits again.
	after := both[0].do(t, context.Background(), "POST", "/v1/chat/completions", frontendKey, budgetBody)
	drainClose(after)
	if after.StatusCode != http.StatusOK {
		t.Fatalf("after settling: %d, want 200", after.StatusCode)
	}
	l, spent, _, ok, err := both[1].srv.cur.Load().engine.Admitter.Budget(context.Background(), "frontend")
	if err != nil || !ok || l.Dollars == 0 {
		t.Fatalf("budget %+v %v %v", l, ok, err)
	}
	if want := float64(n+1) * 30 / 1e6; math.Abs(spent.Cost.Float()-want) > 1e-9 || spent.Tokens != (n+1)*30 {
		t.Errorf("spent %+v, want $%v and %d tokens", spent, want, (n+1)*30)
	}
	crossed := both[0].metric(t, "gateway_budget_soft_limit_crossed_total", "key", "frontend") +
		both[1].metric(t, "gateway_budget_soft_limit_crossed_total", "key", "frontend")
	if crossed != 1 {
		t.Errorf("soft limit crossed %v times, want once", crossed)
	}
}

// TestBudgetTokensInMemory: a token budget kept in this replica; a
// request whose worst case alone is over it is refused with a message
// that says so.
func TestBudgetTokens(t *testing.T) {
	up := newHeldUpstream(t)
	close(up.release)
	srv := redistest.Start(t)
	h := newHarness(t, budgetConfig(up.url, srv.Addr, "{period: day, tokens: 50}"))
	resp := h.do(t, context.Background(), "POST", "/v1/chat/completions", frontendKey, budgetBody)
	e := readError(t, resp)
	if resp.StatusCode != http.StatusTooManyRequests || e.Error.Code != "budget_exceeded" || !strings.Contains(e.Error.Message, "50 tokens per day") {
		t.Fatalf("%d %+v", resp.StatusCode, e)
	}
	resp = h.do(t, context.Background(), "POST", "/v1/chat/completions", frontendKey, strings.Replace(budgetBody, `"max_tokens":100`, `"max_tokens":20`, 1))
	drainClose(resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a request within the budget: %d", resp.StatusCode)
	}
}
