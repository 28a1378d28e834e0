package upstream

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Strategy orders a model's routes for one request. Each policy is a type
// (as Caddy's selection policies are); a model names its strategy in
// config.
type Strategy interface {
	// Order puts routes, a copy the caller owns, in the order to try.
	Order(routes []deployment)
	// Name is the strategy's name in config.
	Name() string
}

// Fallback tries routes in the order configured.
type Fallback struct{}

// Weighted draws routes at random, each next pick in proportion to the
// weights of those left.
type Weighted struct{}

// LeastBusy tries the route with the fewest streams in flight first.
type LeastBusy struct{}

// Fastest tries the route with the lowest recent time to first token
// first; routes not measured yet go first, so that they get measured.
type Fastest struct{}

func (Fallback) Order([]deployment) {}
func (Fallback) Name() string       { return "fallback" }

func (Weighted) Name() string { return "weighted" }
func (Weighted) Order(d []deployment) {
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

func (LeastBusy) Name() string { return "least_busy" }
func (LeastBusy) Order(d []deployment) {
	busy := make(map[*health]int64, len(d))
	for i := range d {
		busy[d[i].health] = d[i].health.inflight.Load()
	}
	slices.SortStableFunc(d, func(a, b deployment) int { return int(busy[a.health] - busy[b.health]) })
}

func (Fastest) Name() string { return "fastest" }
func (Fastest) Order(d []deployment) {
	ttft := make(map[*health]time.Duration, len(d))
	for i := range d {
		ttft[d[i].health], _, _, _ = d[i].health.snapshot()
	}
	slices.SortStableFunc(d, func(a, b deployment) int { return int(ttft[a.health] - ttft[b.health]) })
}

// strategyNamed returns the policy config names; "" is fallback.
func strategyNamed(name string) (Strategy, error) {
	switch name {
	case "", "fallback":
		return Fallback{}, nil
	case "weighted":
		return Weighted{}, nil
	case "least_busy":
		return LeastBusy{}, nil
	case "fastest":
		return Fastest{}, nil
	}
	return nil, fmt.Errorf("unknown routing strategy %q", name)
}

// order returns the routes of one request in the order to try them: by
// the strategy, with deployments on cooldown moved to the end (so they are
// tried only when every healthy one has failed). Whether a deployment is
// cooling is asked once each, outside any comparison: asking puts a
// deployment whose cooldown has passed on probation.
func order(routes []deployment, s Strategy, now time.Time) []deployment {
	out := slices.Clone(routes)
	s.Order(out)
	cooling := make([]deployment, 0, len(out))
	healthy := out[:0]
	for _, d := range out {
		if d.health.coolingAt(now) {
			cooling = append(cooling, d)
		} else {
			healthy = append(healthy, d)
		}
	}
	return append(healthy, cooling...)
}
