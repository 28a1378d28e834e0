package gateway

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/limit"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
)

// Timeouts, each reported with its own code (see classify).
var (
	errFirstTokenTimeout = errors.New("the upstream sent no token within first_token_timeout")
	errIdleTimeout       = errors.New("the upstream was silent for longer than idle_timeout")
	errStreamTimeout     = errors.New("the stream ran longer than stream_timeout")
)

// maxBackoff caps the pause between two attempts of one deployment.
const maxBackoff = 5 * time.Second

// resilientStream is what the relay reads: an upstream stream that, until
// the first delta has been returned, replaces a failed attempt with a new
// one (the same deployment after a backoff, or the next route), and that
// enforces the provider's timeouts. After the first delta a failure is
// returned as it is: nothing is retried once the client has seen text.
type resilientStream struct {
	s      *Server
	parent context.Context // the request's context, shutdown included
	req    *providers.Request
	routes []deployment
	retry  config.Retry
	info   *middleware.Info

	deadline   time.Time // for attempts before the first delta
	attempts   int
	route      int // index into routes
	routeTries int
	backoff    time.Duration

	cur       providers.Stream
	dep       deployment
	began     time.Time       // the current attempt's start
	actx      context.Context // the current attempt's
	cancel    context.CancelCauseFunc
	timer     *time.Timer // first-token, then idle timeout
	total     *time.Timer
	idle      time.Duration
	delivered bool
	onIdle    func()
	// flushEach is set when the current stream cannot report that it is
	// about to wait: onIdle then runs before every Recv.
	flushEach bool
}

var (
	_ providers.Stream       = (*resilientStream)(nil)
	_ providers.IdleNotifier = (*resilientStream)(nil)
)

// openResilient makes the first attempt(s). An error means every attempt
// allowed before the stream opened failed; it is the last one's.
func (s *Server) openResilient(ctx context.Context, req *providers.Request, routes []deployment, info *middleware.Info) (*resilientStream, error) {
	r := &resilientStream{s: s, parent: ctx, req: req, routes: routes, retry: s.cfg.Retry, info: info,
		deadline: time.Now().Add(s.cfg.Retry.MaxTime.Std()), backoff: s.cfg.Retry.Backoff.Std()}
	if err := r.advance(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// advance starts the next attempt after lastErr (nil for the first one),
// waiting out a backoff when it retries the same deployment. It returns
// the error to give up with when no attempt is left.
func (r *resilientStream) advance(lastErr error) error {
	for {
		if lastErr != nil {
			if !retryable(lastErr) || r.attempts >= r.retry.MaxAttempts || r.parent.Err() != nil {
				return lastErr
			}
			wait, ok := r.nextRoute(lastErr)
			if !ok {
				return lastErr
			}
			if wait > 0 {
				if r.onIdle != nil {
					r.onIdle()
				}
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-r.parent.Done():
					t.Stop()
					return lastErr
				}
			}
		}
		dep := r.routes[r.route]
		r.attempts++
		r.routeTries++
		if err := r.pace(dep); err != nil {
			lastErr = err
			continue
		}
		actx, cancel := context.WithCancelCause(r.parent)
		r.req.Model = dep.model
		began := time.Now()
		st, err := dep.provider.StreamChat(actx, r.req)
		if err != nil {
			cancel(nil)
			r.failed(dep, err)
			r.s.log.Debug("upstream attempt failed", "request_id", r.info.RequestID, "provider", dep.providerName, "attempt", r.attempts, "error", r.s.redact.Replace(err.Error()))
			lastErr = err
			continue
		}
		r.start(dep, st, actx, cancel, began)
		return nil
	}
}

// nextRoute chooses where the next attempt goes: the same deployment after
// a backoff (at least the upstream's Retry-After) while it has tries left
// and the wait fits in the time budget, otherwise the next route at once.
func (r *resilientStream) nextRoute(lastErr error) (time.Duration, bool) {
	remaining := time.Until(r.deadline)
	// A provider whose queue is full is not asked again: that is what its
	// queue_timeout says.
	var queueFull *apiError
	sameRoute := !(errors.As(lastErr, &queueFull) && queueFull.Code == "provider_queue_full")
	if sameRoute && r.routeTries < r.retry.AttemptsPerRoute {
		wait := rand.N(r.backoff + 1) // full jitter
		var pe *providers.Error
		if errors.As(lastErr, &pe) && pe.RetryAfter > wait {
			wait = pe.RetryAfter
		}
		var ae *apiError
		if errors.As(lastErr, &ae) && ae.RetryAfter > wait {
			wait = ae.RetryAfter
		}
		if wait < remaining {
			r.backoff = min(2*r.backoff, maxBackoff)
			r.s.metrics.retries.WithLabelValues(r.routes[r.route].providerName).Inc()
			return wait, true
		}
	}
	if r.route+1 < len(r.routes) && remaining > 0 {
		r.route++
		r.routeTries = 0
		r.backoff = r.retry.Backoff.Std()
		r.info.Fallbacks++
		r.s.metrics.fallbacks.WithLabelValues(r.info.Model).Inc()
		return 0, true
	}
	return 0, false
}

// pace waits for the provider's turn, if it is paced.
func (r *resilientStream) pace(dep deployment) error {
	p := r.s.lim.pacers[dep.providerName]
	if p == nil {
		return nil
	}
	wait, err := p.Wait(r.parent)
	if errors.Is(err, limit.ErrQueueFull) {
		r.s.metrics.rateLimited.WithLabelValues("provider_queue").Inc()
		return &apiError{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: "provider_queue_full", RetryAfter: wait,
			Message: "provider " + dep.providerName + " is at its configured request rate and its queue is full"}
	}
	return err
}

// start makes st the current attempt and arms its timeouts.
func (r *resilientStream) start(dep deployment, st providers.Stream, actx context.Context, cancel context.CancelCauseFunc, began time.Time) {
	r.cur, r.dep, r.began, r.actx, r.cancel, r.idle = st, dep, began, actx, cancel, dep.idleTimeout
	dep.health.inflight.Add(1)
	r.info.Provider, r.info.Attempts = dep.providerName, r.attempts
	if dep.firstTokenTimeout > 0 {
		r.timer = time.AfterFunc(dep.firstTokenTimeout, func() { cancel(errFirstTokenTimeout) })
	}
	if dep.streamTimeout > 0 {
		r.total = time.AfterFunc(dep.streamTimeout, func() { cancel(errStreamTimeout) })
	}
	r.notify()
}

// notify hands onIdle to the current stream, or arranges to call it before
// every Recv when the stream cannot.
func (r *resilientStream) notify() {
	if r.onIdle == nil {
		return
	}
	n, ok := r.cur.(providers.IdleNotifier)
	if ok {
		n.NotifyIdle(r.onIdle)
	}
	r.flushEach = !ok
}

// Recv returns the next chunk of the current attempt, moving to a new
// attempt when one fails before the first delta.
func (r *resilientStream) Recv() (providers.Chunk, error) {
	for {
		if r.flushEach {
			r.onIdle() // the stream cannot say when it waits: flush every time
		}
		c, err := r.cur.Recv()
		if err == nil {
			if c.Content != "" || len(c.ToolCalls) > 0 {
				if !r.delivered {
					r.firstDelta()
				} else if r.idle > 0 {
					r.timer.Reset(r.idle)
				}
			}
			return c, nil
		}
		if cause := context.Cause(r.actx); r.actx.Err() != nil && r.parent.Err() == nil {
			if cause == errFirstTokenTimeout && r.delivered {
				cause = errIdleTimeout // it fired as the first delta arrived
			}
			err = cause
		}
		if errors.Is(err, io.EOF) {
			return c, err
		}
		r.failed(r.dep, err)
		if r.delivered {
			return c, err
		}
		r.stopAttempt()
		if e := r.advance(err); e != nil {
			return providers.Chunk{}, e
		}
	}
}

// firstDelta records the attempt's success and swaps the first-token
// timeout for the idle timeout.
func (r *resilientStream) firstDelta() {
	r.delivered = true
	if r.dep.health.success(time.Since(r.began)) {
		r.s.log.Info("deployment recovered", "provider", r.dep.providerName, "model", r.dep.model)
	}
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.idle > 0 {
		cancel := r.cancel
		r.timer = time.AfterFunc(r.idle, func() { cancel(errIdleTimeout) })
	}
}

// failed records an upstream fault of dep (not a client's mistake, not a
// client leaving) towards its cooldown.
func (r *resilientStream) failed(dep deployment, err error) {
	if r.parent.Err() == nil {
		r.s.metrics.upstreamErrors.WithLabelValues(dep.providerName, metricCode(classify(r.parent, err))).Inc()
	}
	if r.parent.Err() != nil || !(retryable(err) || errors.Is(err, errIdleTimeout) || errors.Is(err, errStreamTimeout)) {
		return
	}
	h := r.s.cfg.Health
	if dep.health.failure(healthPolicy{threshold: h.FailureThreshold, cooldown: h.Cooldown.Std()}, time.Now()) {
		r.s.log.Warn("deployment on cooldown", "provider", dep.providerName, "model", dep.model,
			"cooldown", h.Cooldown.String(), "error", r.s.redact.Replace(err.Error()))
	}
}

func (r *resilientStream) stopAttempt() {
	if r.cur != nil {
		r.dep.health.inflight.Add(-1)
	}
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	if r.total != nil {
		r.total.Stop()
		r.total = nil
	}
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	if r.cancel != nil {
		r.cancel(context.Canceled)
	}
}

// Close ends the current attempt.
func (r *resilientStream) Close() error {
	r.stopAttempt()
	return nil
}

// NotifyIdle passes fn on to every attempt's stream that can call it.
func (r *resilientStream) NotifyIdle(fn func()) {
	r.onIdle = fn
	r.notify()
}

// retryable says whether a failure before the first delta is worth another
// attempt: connection failures, 408/429/5xx, errors inside an opened stream,
// cut or malformed streams and first-token timeouts are; a request the
// upstream refused as such (400, 401, 403, 404, 413, 422) and a client that
// left are not.
func retryable(err error) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, errFirstTokenTimeout), errors.Is(err, providers.ErrTruncated), errors.Is(err, providers.ErrMalformed),
		errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusTooManyRequests || ae.Status >= 500
	}
	var pe *providers.Error
	if errors.As(err, &pe) {
		s := pe.Status
		return s == 0 || s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500
	}
	if errors.Is(err, errIdleTimeout) || errors.Is(err, errStreamTimeout) {
		return false
	}
	return true // connection refused or reset, and other transport failures
}
