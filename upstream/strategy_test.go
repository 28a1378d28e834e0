package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
)

func routesFor(weights ...int) []deployment {
	var d []deployment
	for i, w := range weights {
		d = append(d, deployment{providerName: fmt.Sprint("p", i), weight: w, health: &health{}})
	}
	return d
}

func TestWeightedDistribution(t *testing.T) {
	routes := routesFor(3, 1, 0)
	first := map[string]int{}
	const n = 4000
	for i := 0; i < n; i++ {
		o := order(routes, strategyWeighted, time.Now())
		first[o[0].providerName]++
		if len(o) != 3 {
			t.Fatal("routes lost")
		}
	}
	if share := float64(first["p0"]) / n; share < 0.70 || share > 0.80 {
		t.Errorf("weight 3 of 4 came first %.2f of the time, want about 0.75", share)
	}
	if first["p2"] != 0 {
		t.Errorf("weight 0 came first %d times", first["p2"])
	}
}

func TestLeastBusyAndFastest(t *testing.T) {
	routes := routesFor(1, 1, 1)
	routes[0].health.inflight.Store(3)
	routes[1].health.inflight.Store(1)
	routes[2].health.inflight.Store(2)
	if o := order(routes, strategyLeastBusy, time.Now()); o[0].providerName != "p1" || o[1].providerName != "p2" {
		t.Errorf("least_busy order %s %s %s", o[0].providerName, o[1].providerName, o[2].providerName)
	}
	routes[0].health.success(50 * time.Millisecond)
	routes[1].health.success(80 * time.Millisecond)
	routes[1].health.success(10 * time.Millisecond) // the average moves: 0.3·10 + 0.7·80 = 59
	if o := order(routes, strategyFastest, time.Now()); o[0].providerName != "p2" || o[1].providerName != "p0" {
		t.Errorf("fastest order %s %s %s (no sample first, then 50ms, then 59ms)", o[0].providerName, o[1].providerName, o[2].providerName)
	}
}

func TestCooldownOrderAndProbation(t *testing.T) {
	routes := routesFor(1, 1)
	p := healthPolicy{threshold: 2, cooldown: time.Minute}
	now := time.Now()
	h := routes[0].health
	if h.failure(p, now) || !h.failure(p, now) {
		t.Fatal("the second consecutive failure should start the cooldown")
	}
	if o := order(routes, strategyFallback, now); o[0].providerName != "p1" {
		t.Error("a deployment on cooldown was not moved last")
	}
	later := now.Add(2 * time.Minute)
	if o := order(routes, strategyFallback, later); o[0].providerName != "p0" {
		t.Error("the deployment was not probed after its cooldown")
	}
	if !h.failure(p, later) {
		t.Error("a failed probe did not start a new cooldown at once")
	}
	if !h.coolingAt(later.Add(time.Second)) {
		t.Error("not cooling after the failed probe")
	}
	if h.coolingAt(later.Add(2 * time.Minute)); !h.success(time.Millisecond) {
		t.Error("a successful probe should report recovery")
	}
	if _, failures, until, halfOpen := h.snapshot(); failures != 0 || !until.IsZero() || halfOpen {
		t.Errorf("not healthy after recovery: %d %v %v", failures, until, halfOpen)
	}
}

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
	h := newHarness(t, routesConfig(url1, url2, ""), func(c *config.Config) {
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
	h.logs.waitFor(t, "deployment on cooldown")
	if p := serve(); p != "up2" || calls.Load() != 2 {
		t.Fatalf("during the cooldown: served by %s, up1 called %d times (want up2, 2)", p, calls.Load())
	}
	time.Sleep(150 * time.Millisecond) // let the 100ms cooldown pass
	if p := serve(); p != "up1" {
		t.Fatalf("after the cooldown: served by %s, want the probed up1", p)
	}
	h.logs.waitFor(t, "deployment recovered")
	if st := h.deploymentState(t, "resilient", "up1"); st != "healthy" {
		t.Errorf("up1 is %q after a successful probe", st)
	}
}

// twoMocks serves model "m" from mock providers a (slower to first token)
// and b, by the given strategy and weights.
func twoMocks(strategy string, wa, wb int) string {
	return newConfig(`  a:
    type: mock
    mock: {tokens: 2, first_token_delay: 20ms}
  b:
    type: mock
    mock: {tokens: 2}
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
		h := newHarness(t, twoMocks(strategyWeighted, 3, 1))
		count := map[string]int{}
		for i := 0; i < 200; i++ {
			count[h.servedBy(t, "[mock first_delay=0s]")]++
		}
		if share := float64(count["a"]) / 200; share < 0.62 || share > 0.88 {
			t.Errorf("a served %.2f of requests at weights 3:1", share)
		}
	})
	t.Run("least_busy", func(t *testing.T) {
		h := newHarness(t, twoMocks(strategyLeastBusy, 1, 1))
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
		h := newHarness(t, twoMocks(strategyFastest, 1, 1))
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
