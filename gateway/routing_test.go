package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/internal/testclock"
)

type deploymentsStatus struct {
	Models []struct {
		Model, Strategy string
		Routes          []struct {
			Provider string `json:"provider"`
			State    string `json:"state"`
			Failures int    `json:"consecutive_failures"`
		}
	}
}

func (h *harness) deploymentState(t *testing.T, model, provider string) string {
	t.Helper()
	resp := h.do(t, context.Background(), "GET", "/admin/deployments", "", "")
	var st deploymentsStatus
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	for _, m := range st.Models {
		for _, r := range m.Routes {
			if m.Model == model && r.Provider == provider {
				return r.State
			}
		}
	}
	t.Fatalf("no %s/%s in %+v", model, provider, st)
	return ""
}

// TestCooldownAndRecovery: a deployment failing twice is skipped while it
// cools down, then probed, and restored when the probe succeeds.
func TestCooldownAndRecovery(t *testing.T) {
	calls, url1 := countingUpstream(t, func(n int32, w http.ResponseWriter, _ *http.Request) {
		if n <= 2 {
			http.Error(w, "overloaded", 503)
			return
		}
		sseOK(w, roleChunk, helloChunk, stopChunk)
	})
	_, url2 := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) { sseOK(w, roleChunk, helloChunk, stopChunk) })
	clock := testclock.New(time.Now())
	h := newHarnessWith(t, routesConfig(url1, url2, ""), []Option{WithClock(clock.Now)}, func(c *config.Config) {
		c.Retry.AttemptsPerRoute = 1
		c.Health = config.Health{FailureThreshold: 2, Cooldown: config.Duration(100 * time.Millisecond)}
	})
	serve := func() string {
		_, _, evs := h.streamNative(t, `{"model":"resilient","prompt":"hi"}`)
		if evs[len(evs)-1].Type != "done" {
			t.Fatalf("events %+v", evs)
		}
		return evs[0].Provider
	}
	for i := 0; i < 2; i++ {
		if p := serve(); p != "up2" {
			t.Fatalf("request %d served by %s, want the fallback up2", i, p)
		}
	}
	if st := h.deploymentState(t, "resilient", "up1"); st != "cooldown" {
		t.Fatalf("up1 is %q after two failures", st)
	}
	// Logged while the second request was served, before its answer.
	if !strings.Contains(h.logs.String(), "deployment on cooldown") {
		t.Error("the cooldown was not logged")
	}
	if p := serve(); p != "up2" || calls.Load() != 2 {
		t.Fatalf("during the cooldown: served by %s, up1 called %d times (want up2, 2)", p, calls.Load())
	}
	clock.Add(150 * time.Millisecond) // the 100ms cooldown passes
	if p := serve(); p != "up1" {
		t.Fatalf("after the cooldown: served by %s, want the probed up1", p)
	}
	if !strings.Contains(h.logs.String(), "deployment recovered") {
		t.Error("the recovery was not logged")
	}
	if st := h.deploymentState(t, "resilient", "up1"); st != "healthy" {
		t.Errorf("up1 is %q after a successful probe", st)
	}
}

// twoMocks serves model "m" from mock providers a (slower to first token)
// and b, by the given strategy and weights.
func twoMocks(strategy string, wa, wb int) string {
	return newConfig(`  a:
    type: mock
    mock: {directives: true, tokens: 2, first_token_delay: 20ms}
  b:
    type: mock
    mock: {directives: true, tokens: 2}
`, fmt.Sprintf(`  m:
    strategy: %s
    routes:
      - provider: a
        weight: %d
      - provider: b
        weight: %d
`, strategy, wa, wb))
}

func (h *harness) servedBy(t *testing.T, prompt string) string {
	t.Helper()
	_, _, evs := h.streamNative(t, `{"model":"m","prompt":"`+prompt+`"}`)
	return evs[0].Provider
}

func TestStrategiesOverHTTP(t *testing.T) {
	t.Run("weighted", func(t *testing.T) {
		h := newHarness(t, twoMocks("weighted", 3, 1))
		count := map[string]int{}
		for i := 0; i < 200; i++ {
			count[h.servedBy(t, "[mock first_delay=0s]")]++
		}
		if share := float64(count["a"]) / 200; share < 0.62 || share > 0.88 {
			t.Errorf("a served %.2f of requests at weights 3:1", share)
		}
	})
	t.Run("least_busy", func(t *testing.T) {
		h := newHarness(t, twoMocks("least_busy", 1, 1))
		ctx, cancel := context.WithCancel(context.Background())
		resp := h.post(t, ctx, "/v1/stream", `{"model":"m","prompt":"[mock stall_after=0]"}`)
		ev, err := newSSEReader(resp.Body).next()
		if err != nil || decodeEvent(t, ev).Provider != "a" {
			t.Fatalf("held stream: %+v %v", ev, err)
		}
		for i := 0; i < 5; i++ {
			if p := h.servedBy(t, "x"); p != "b" {
				t.Errorf("request %d went to %s while a had a stream in flight", i, p)
			}
		}
		cancel()
		resp.Body.Close()
	})
	t.Run("fastest", func(t *testing.T) {
		h := newHarness(t, twoMocks("fastest", 1, 1))
		// Both are measured first (a, then the unmeasured b); then b, 20ms
		// quicker to its first token, is preferred.
		if first, second := h.servedBy(t, "x"), h.servedBy(t, "x"); first != "a" || second != "b" {
			t.Fatalf("measuring: %s then %s, want a then b", first, second)
		}
		for i := 0; i < 5; i++ {
			if p := h.servedBy(t, "x"); p != "b" {
				t.Errorf("request %d went to the slower %s", i, p)
			}
		}
	})
}
