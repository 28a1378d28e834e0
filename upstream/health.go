package gateway

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Routing strategies, chosen per model.
const (
	strategyFallback  = "fallback"   // routes in the order configured
	strategyWeighted  = "weighted"   // random, in proportion to weight
	strategyLeastBusy = "least_busy" // fewest streams in flight first
	strategyFastest   = "fastest"    // lowest recent time to first token first
)

// health is the state one deployment shares across requests.
type health struct {
	inflight atomic.Int64

	mu sync.Mutex
	// ttft is a moving average of the time to first token; 0 until the
	// first sample.
	ttft          time.Duration
	failures      int // consecutive
	cooldownUntil time.Time
	halfOpen      bool // cooled down, on probation: one failure re-cools
}

// healthPolicy says when a deployment goes on cooldown.
type healthPolicy struct {
	threshold int           // consecutive failures
	cooldown  time.Duration // how long it is skipped
}

// ttftWeight is the weight of a new sample in the moving average.
const ttftWeight = 0.3

// coolingAt reports whether the deployment is on cooldown at now; a
// deployment whose cooldown has passed is put on probation.
func (h *health) coolingAt(now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cooldownUntil.IsZero() {
		return false
	}
	if now.Before(h.cooldownUntil) {
		return true
	}
	h.cooldownUntil, h.halfOpen = time.Time{}, true
	return false
}

// success records a first delta after ttft.
func (h *health) success(ttft time.Duration) (recovered bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ttft == 0 {
		h.ttft = ttft
	} else {
		h.ttft = time.Duration(ttftWeight*float64(ttft) + (1-ttftWeight)*float64(h.ttft))
	}
	recovered = h.halfOpen
	h.failures, h.halfOpen = 0, false
	return recovered
}

// failure records an upstream failure; it reports whether the deployment
// has just gone on cooldown.
func (h *health) failure(p healthPolicy, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failures++
	if h.halfOpen || (p.threshold > 0 && h.failures >= p.threshold) {
		h.cooldownUntil, h.halfOpen = now.Add(p.cooldown), false
		return true
	}
	return false
}

func (h *health) snapshot() (ttft time.Duration, failures int, until time.Time, halfOpen bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ttft, h.failures, h.cooldownUntil, h.halfOpen
}

// order returns the routes of one request in the order to try them: by
// the model's strategy, with deployments on cooldown moved to the end (so
// they are tried only when every healthy one has failed).
func order(routes []deployment, strategy string, now time.Time) []deployment {
	out := slices.Clone(routes)
	switch strategy {
	case strategyWeighted:
		weightedShuffle(out)
	case strategyLeastBusy:
		slices.SortStableFunc(out, func(a, b deployment) int {
			return int(a.health.inflight.Load() - b.health.inflight.Load())
		})
	case strategyFastest:
		// No sample yet sorts first, so that new deployments are measured.
		slices.SortStableFunc(out, func(a, b deployment) int {
			ta, _, _, _ := a.health.snapshot()
			tb, _, _, _ := b.health.snapshot()
			return int(ta - tb)
		})
	}
	slices.SortStableFunc(out, func(a, b deployment) int {
		ca, cb := a.health.coolingAt(now), b.health.coolingAt(now)
		switch {
		case ca == cb:
			return 0
		case ca:
			return 1
		}
		return -1
	})
	return out
}

// weightedShuffle orders d randomly, each next pick in proportion to the
// weights of those left.
func weightedShuffle(d []deployment) {
	for i := 0; i < len(d)-1; i++ {
		total := 0
		for _, x := range d[i:] {
			total += x.weight
		}
		if total <= 0 {
			return
		}
		r := rand.N(total)
		for j := i; j < len(d); j++ {
			if r < d[j].weight {
				d[i], d[j] = d[j], d[i]
				break
			}
			r -= d[j].weight
		}
	}
}
