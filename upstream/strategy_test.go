package upstream

import (
	"fmt"
	"testing"
	"time"
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
		o := order(routes, Weighted{}, time.Now())
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
	if o := order(routes, LeastBusy{}, time.Now()); o[0].providerName != "p1" || o[1].providerName != "p2" {
		t.Errorf("least_busy order %s %s %s", o[0].providerName, o[1].providerName, o[2].providerName)
	}
	routes[0].health.success(50 * time.Millisecond)
	routes[1].health.success(80 * time.Millisecond)
	routes[1].health.success(10 * time.Millisecond) // the average moves: 0.3·10 + 0.7·80 = 59
	if o := order(routes, Fastest{}, time.Now()); o[0].providerName != "p2" || o[1].providerName != "p0" {
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
	if o := order(routes, Fallback{}, now); o[0].providerName != "p1" {
		t.Error("a deployment on cooldown was not moved last")
	}
	later := now.Add(2 * time.Minute)
	if o := order(routes, Fallback{}, later); o[0].providerName != "p0" {
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
