package limit

import (
	"context"
	"errors"
	"time"

	"golang.org/x/time/rate"
)

// ErrQueueFull means a request's turn towards a provider is further away
// than the queue allows.
var ErrQueueFull = errors.New("provider queue full")

// Pacer spaces the requests sent to one provider, shared by all clients, so
// the gateway never sends more than the operator bought.
type Pacer struct {
	lim   *rate.Limiter
	queue time.Duration
}

// NewPacer allows perSecond requests a second, one at a time, and lets a
// request wait for its turn at most queue.
func NewPacer(perSecond float64, queue time.Duration) *Pacer {
	return &Pacer{lim: rate.NewLimiter(rate.Limit(perSecond), 1), queue: queue}
}

// Wait blocks until the request may go. If its turn is further away than
// the queue allows it returns at once with ErrQueueFull and the delay; if
// ctx ends first it gives its turn back.
func (p *Pacer) Wait(ctx context.Context) (time.Duration, error) {
	r := p.lim.Reserve()
	d := r.Delay()
	if d > p.queue {
		r.Cancel()
		return d, ErrQueueFull
	}
	if d == 0 {
		return 0, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return 0, nil
	case <-ctx.Done():
		r.Cancel()
		return 0, ctx.Err()
	}
}
