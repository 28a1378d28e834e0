package upstream

import (
	"sync"
	"sync/atomic"
	"time"
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

// DeploymentState is a deployment as routing sees it, for operators.
type DeploymentState struct {
	Provider string
	// Model is the upstream model name.
	Model  string
	Weight int
	// State is healthy, cooldown or probing.
	State               string
	InFlight            int64
	ConsecutiveFailures int
	// TTFT is the moving average of time to first token.
	TTFT time.Duration
	// CooldownUntil is set while State is cooldown.
	CooldownUntil time.Time
}

func (d *deployment) state(now time.Time) DeploymentState {
	ttft, failures, until, halfOpen := d.health.snapshot()
	st := DeploymentState{Provider: d.providerName, Model: d.model, Weight: d.weight, State: "healthy",
		InFlight: d.health.inflight.Load(), ConsecutiveFailures: failures, TTFT: ttft}
	switch {
	case now.Before(until):
		st.State, st.CooldownUntil = "cooldown", until
	case halfOpen || !until.IsZero():
		st.State = "probing"
	}
	return st
}
