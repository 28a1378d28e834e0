package upstream

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/limit"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/spend"
	"github.com/streamgate/gateway/tracing"
)

// Timeouts, each reported with its own code.
var (
	ErrFirstTokenTimeout = failure.Define(http.StatusGatewayTimeout, failure.TypeServer, "upstream_first_token_timeout", "the upstream sent no token within first_token_timeout")
	ErrIdleTimeout       = failure.Define(http.StatusGatewayTimeout, failure.TypeServer, "upstream_idle_timeout", "the upstream was silent for longer than idle_timeout")
	ErrStreamTimeout     = failure.Define(http.StatusGatewayTimeout, failure.TypeServer, "upstream_stream_timeout", "the stream ran longer than stream_timeout")
)

// maxBackoff caps the pause between two attempts of one deployment.
const maxBackoff = 5 * time.Second

// Attempt is what routing did for one request so far.
type Attempt struct {
	// Provider is the provider of the current (or last) attempt.
	Provider string
	// Attempts counts upstream calls; Fallbacks the moves to another
	// route.
	Attempts, Fallbacks int
	// Deployment is the upstream model of the current (or last)
	// attempt, and Price its price (nil when not known).
	Deployment string
	Price      *spend.Price
	// System is the current (or last) attempt's provider type.
	System string
}

// Stream is what the relay reads: an upstream stream that, until the
// first delta has been returned, replaces a failed attempt with a new one
// (the same deployment after a backoff, or the next route), and that
// enforces the provider's timeouts. After the first delta a failure is
// returned as it is: nothing is retried once the client has seen text.
type Stream struct {
	r         *Registry
	parent    context.Context // the request's context, shutdown included
	req       *providers.Request
	model     string
	requestID string
	routes    []deployment

	deadline   time.Time // for attempts before the first delta
	attempt    Attempt
	route      int // index into routes
	routeTries int
	backoff    time.Duration

	cur       providers.Stream
	dep       deployment
	began     time.Time       // the current attempt's start
	actx      context.Context // the current attempt's
	span      trace.Span      // the current attempt's (tracing.None when untraced)
	cancel    context.CancelCauseFunc
	dl        *deadline // first-token, then idle timeout
	total     *time.Timer
	idle      time.Duration
	delivered bool
	// moved says a delta arrived since the deadline last marked one. A
	// stream that reports its waits marks once per wait, not per delta
	// (see idleHook).
	moved  bool
	onIdle func()
	// flushEach is set when the current stream cannot report that it is
	// about to wait: onIdle then runs before every Recv.
	flushEach bool
	// hook is idleHook as a func value, made once per stream.
	hook func()
}

var (
	_ providers.Stream       = (*Stream)(nil)
	_ providers.IdleNotifier = (*Stream)(nil)
)

// Open opens a stream of model for req under ctx, trying its routes in
// the order of its strategy as the retry settings allow. On error, every
// attempt allowed before the stream opened failed, and the error is the
// last one's; Attempt says what was tried either way. requestID is for
// logs.
func (r *Registry) Open(ctx context.Context, req *providers.Request, model, requestID string) (*Stream, Attempt, error) {
	s := &Stream{r: r, parent: ctx, req: req, model: model, requestID: requestID,
		routes:   order(r.models[model], r.strategies[model], r.opts.Now()),
		deadline: time.Now().Add(r.retry.MaxTime.Std()), backoff: r.retry.Backoff.Std()}
	if len(s.routes) == 0 {
		return nil, s.attempt, errors.New("upstream: no route for model " + model)
	}
	if err := s.advance(nil); err != nil {
		return nil, s.attempt, err
	}
	return s, s.attempt, nil
}

// Attempt says what routing did so far: after the first delta, which
// provider answered.
func (s *Stream) Attempt() Attempt { return s.attempt }

var _ spend.Pricer = (*Stream)(nil)

// Price is the price of the deployment answering.
func (s *Stream) Price() *spend.Price { return s.attempt.Price }

// advance starts the next attempt after lastErr (nil for the first one),
// waiting out a backoff when it retries the same deployment. It returns
// the error to give up with when no attempt is left.
func (s *Stream) advance(lastErr error) error {
	for {
		if lastErr != nil {
			if !Retryable(lastErr) || s.attempt.Attempts >= s.r.retry.MaxAttempts || s.parent.Err() != nil {
				return lastErr
			}
			wait, ok := s.nextRoute(lastErr)
			if !ok {
				return lastErr
			}
			if wait > 0 {
				if s.onIdle != nil {
					s.onIdle()
				}
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-s.parent.Done():
					t.Stop()
					return lastErr
				}
			}
		}
		dep := s.routes[s.route]
		s.attempt.Attempts++
		s.attempt.Provider, s.attempt.Deployment, s.attempt.Price, s.attempt.System = dep.providerName, dep.model, dep.price, dep.system
		s.routeTries++
		sctx, span := startAttempt(s.parent, "chat", dep, s.attempt.Attempts)
		if err := s.pace(dep); err != nil {
			endAttempt(s.parent, span, err)
			lastErr = err
			continue
		}
		actx, cancel := context.WithCancelCause(sctx)
		s.req.Model = dep.model
		began := time.Now()
		// What only the client's own API can say is refused by a
		// provider that would have to translate it, not dropped.
		err := providers.Untranslatable(dep.provider, s.req, dep.providerName)
		var st providers.Stream
		if err == nil {
			st, err = streamChat(actx, dep.provider, s.req)
		}
		if err != nil {
			cancel(nil)
			endAttempt(s.parent, span, err)
			s.failed(dep, err)
			s.r.opts.Log.Debug("upstream attempt failed", "request_id", s.requestID, "provider", dep.providerName, "attempt", s.attempt.Attempts, "error", s.r.opts.Redact(err.Error()))
			lastErr = err
			continue
		}
		s.span = span
		s.start(dep, st, actx, cancel, began)
		return nil
	}
}

// nextRoute chooses where the next attempt goes: the same deployment after
// a backoff (at least the upstream's Retry-After) while it has tries left
// and the wait fits in the time budget, otherwise the next route at once.
func (s *Stream) nextRoute(lastErr error) (time.Duration, bool) {
	remaining := time.Until(s.deadline)
	// A provider whose queue is full is not asked again: that is what its
	// queue_timeout says.
	fe := failure.Of(lastErr)
	sameRoute := fe == nil || fe.Code != failure.CodeQueueFull
	if sameRoute && s.routeTries < s.r.retry.AttemptsPerRoute {
		wait := rand.N(s.backoff + 1) // full jitter
		var pe *providers.Error
		if errors.As(lastErr, &pe) && pe.RetryAfter > wait {
			wait = pe.RetryAfter
		}
		if fe != nil && fe.RetryAfter > wait {
			wait = fe.RetryAfter
		}
		if wait < remaining {
			s.backoff = min(2*s.backoff, maxBackoff)
			s.r.opts.Observer.Retried(s.routes[s.route].providerName)
			s.event(tracing.EventRetry, lastErr, wait)
			return wait, true
		}
	}
	if s.route+1 < len(s.routes) && remaining > 0 {
		s.route++
		s.routeTries = 0
		s.backoff = s.r.retry.Backoff.Std()
		s.attempt.Fallbacks++
		s.r.opts.Observer.FellBack(s.model)
		s.event(tracing.EventFallback, lastErr, 0)
		return 0, true
	}
	return 0, false
}

// pace waits for the provider's turn, if it is paced.
func (s *Stream) pace(dep deployment) error {
	p := s.r.pacers[dep.providerName]
	if p == nil {
		return nil
	}
	wait, err := p.Wait(s.parent)
	if errors.Is(err, limit.ErrQueueFull) {
		s.r.opts.Observer.QueueFull(dep.providerName)
		return &failure.Error{Status: http.StatusTooManyRequests, Type: failure.TypeRateLimit, Code: failure.CodeQueueFull, RetryAfter: wait,
			Message: "provider " + dep.providerName + " is at its configured request rate and its queue is full"}
	}
	return err
}

// start makes st the current attempt and arms its timeouts.
func (s *Stream) start(dep deployment, st providers.Stream, actx context.Context, cancel context.CancelCauseFunc, began time.Time) {
	s.cur, s.dep, s.began, s.actx, s.cancel, s.idle = st, dep, began, actx, cancel, dep.idleTimeout
	dep.health.inflight.Add(1)
	if dep.firstTokenTimeout > 0 {
		s.dl = newDeadline(began, dep.firstTokenTimeout, 0, cancel)
	}
	if dep.streamTimeout > 0 {
		s.total = time.AfterFunc(dep.streamTimeout, func() { cancel(ErrStreamTimeout) })
	}
	s.notify()
}

// notify hands idleHook to the current stream, or arranges to call it
// before every Recv when the stream cannot.
func (s *Stream) notify() {
	if s.onIdle == nil {
		return
	}
	n, ok := s.cur.(providers.IdleNotifier)
	if ok {
		if s.hook == nil {
			s.hook = s.idleHook
		}
		n.NotifyIdle(s.hook)
	}
	s.flushEach = !ok
}

// idleHook runs when the current stream is about to wait for the network:
// it has the idle timeout count from there if deltas arrived since it
// last did, then calls onIdle. Marking every delta instead cost a clock
// read a token with tokens back to back (issue 18); from the wait the
// timeout counts from no earlier than the last delta, later only by the
// time the deltas of one read took to relay.
func (s *Stream) idleHook() {
	if s.moved && s.dl != nil {
		s.moved = false
		s.dl.mark()
	}
	s.onIdle()
}

// Recv returns the next chunk of the current attempt, moving to a new
// attempt when one fails before the first delta.
func (s *Stream) Recv() (providers.Chunk, error) {
	for {
		if s.flushEach {
			s.onIdle() // the stream cannot say when it waits: flush every time
		}
		c, err := s.cur.Recv()
		if err == nil {
			if c.Delta() {
				switch {
				case !s.delivered:
					s.firstDelta()
				case s.dl == nil: // no idle timeout
				case s.onIdle != nil && !s.flushEach:
					s.moved = true // idleHook marks it before the next wait
				default:
					s.dl.mark()
				}
			}
			return c, nil
		}
		if retried, err := s.attemptEnded(err); !retried {
			return c, err
		}
	}
}

// attemptEnded takes in the error the current attempt's Recv returned: it
// reports that a new attempt is open, or returns the error for the reader.
// It is a function of its own to keep Recv's frame small: an idle
// stream's handler waits under it (see streamChat).
func (s *Stream) attemptEnded(err error) (retried bool, _ error) {
	if cause := context.Cause(s.actx); s.actx.Err() != nil && s.parent.Err() == nil {
		if cause == ErrFirstTokenTimeout && s.delivered {
			// The first-token timeout ran out as the first delta
			// arrived: the stream was delivered, and then cut.
			cause = ErrIdleTimeout
		}
		err = cause
	}
	if errors.Is(err, io.EOF) {
		return false, err
	}
	spanFailed(s.parent, s.span, err)
	s.failed(s.dep, err)
	if s.delivered {
		return false, err
	}
	s.stopAttempt()
	if e := s.advance(err); e != nil {
		return false, e
	}
	return true, nil
}

// firstDelta records the attempt's success and swaps the first-token
// timeout for the idle timeout.
func (s *Stream) firstDelta() {
	s.delivered = true
	if n := s.req.Native; n != nil {
		// No attempt follows the first delta, and the body sent as it
		// came (the whole conversation, from an agent) would otherwise
		// be held to the stream's end.
		n.Body = nil
	}
	// Once per request; never per token.
	s.span.AddEvent(tracing.EventFirstToken)
	trace.SpanFromContext(s.parent).AddEvent(tracing.EventFirstToken)
	if s.dep.health.success(time.Since(s.began)) {
		s.r.opts.Log.Info("deployment recovered", "provider", s.dep.providerName, "model", s.dep.model)
	}
	switch {
	case s.idle <= 0:
		if s.dl != nil {
			s.dl.stop()
			s.dl = nil
		}
	case s.dl != nil:
		// The first-token timer goes on as the idle timer rather than a
		// new one a stream.
		s.dl.toIdle(s.idle)
	default:
		s.dl = newDeadline(s.began, s.idle, s.idle, s.cancel)
	}
}

// failed records an upstream fault of dep (not a client's mistake, not a
// client leaving) towards its cooldown.
func (s *Stream) failed(dep deployment, err error) { s.r.failed(s.parent, dep, err) }

// failed records that an attempt on dep failed with err, under the
// request's context ctx: a metric, and towards dep's cooldown when the
// fault is the upstream's. A client that left is no upstream's fault.
func (r *Registry) failed(ctx context.Context, dep deployment, err error) {
	if ctx.Err() != nil {
		return
	}
	r.opts.Observer.Failed(dep.providerName, failure.Classify(ctx, err))
	if !(Retryable(err) || errors.Is(err, ErrIdleTimeout) || errors.Is(err, ErrStreamTimeout)) {
		return
	}
	if dep.health.failure(r.policy, r.opts.Now()) {
		r.opts.Log.Warn("deployment on cooldown", "provider", dep.providerName, "model", dep.model,
			"cooldown", r.policy.cooldown.String(), "error", r.opts.Redact(err.Error()))
	}
}

func (s *Stream) stopAttempt() {
	if s.cur != nil {
		s.dep.health.inflight.Add(-1)
	}
	if s.dl != nil {
		s.dl.stop()
		s.dl = nil
	}
	if s.total != nil {
		s.total.Stop()
		s.total = nil
	}
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	if s.cancel != nil {
		s.cancel(context.Canceled)
	}
	if s.span != nil {
		s.span.End()
		s.span = nil
	}
}

// Close ends the current attempt.
func (s *Stream) Close() error {
	s.stopAttempt()
	return nil
}

// NotifyIdle passes fn on to every attempt's stream that can call it.
func (s *Stream) NotifyIdle(fn func()) {
	s.onIdle = fn
	s.notify()
}

// Retryable says whether a failure before the first delta is worth another
// attempt: connection failures, 408/429/5xx, errors inside an opened stream,
// cut or malformed streams and first-token timeouts are; a request the
// upstream refused as such (400, 401, 403, 404, 413, 422) and a client that
// left are not.
func Retryable(err error) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case errors.Is(err, ErrFirstTokenTimeout), errors.Is(err, providers.ErrTruncated), errors.Is(err, providers.ErrMalformed),
		errors.Is(err, io.ErrUnexpectedEOF):
		return true
	case errors.Is(err, ErrIdleTimeout), errors.Is(err, ErrStreamTimeout):
		return false
	}
	if fe := failure.Of(err); fe != nil {
		return fe.Status == http.StatusTooManyRequests || fe.Status >= 500
	}
	var pe *providers.Error
	if errors.As(err, &pe) {
		s := pe.Status
		return s == 0 || s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500
	}
	return true // connection refused or reset, and other transport failures
}
