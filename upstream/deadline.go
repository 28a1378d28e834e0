package upstream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadline is one attempt's first-token timeout and then its idle
// timeout, on one timer. The idle timeout counts from the last delta, but
// a delta does not move the timer: moving it is an update of the
// runtime's timer heap (2.2% of the relay's CPU with tokens 20 ms apart,
// issue 18, for a timeout of minutes by default). A delta only records
// when it came (mark), and the timer, when it fires, sets itself again
// for what is left of the timeout since then; it cancels the attempt
// only once that is nothing.
//
// A deadline serves one attempt: a stopped one never fires again, so a
// callback of an attempt that is over cannot reach the next.
type deadline struct {
	// base is the attempt's start; last is when the last delta came, as
	// time since base (the monotonic clock, as time.Since reads it).
	base time.Time
	last atomic.Int64

	cancel context.CancelCauseFunc

	mu sync.Mutex // guards what follows, against fire
	t  *time.Timer
	// idle is the idle timeout once the first delta came; 0 before, when
	// the timer is the first-token timeout.
	idle    time.Duration
	stopped bool
}

// newDeadline arms a deadline for an attempt that began at base: after d
// it cancels the attempt with ErrFirstTokenTimeout, or, when idle is set
// (an attempt with no first-token timeout, from its first delta), counts
// d as its idle timeout.
func newDeadline(base time.Time, d, idle time.Duration, cancel context.CancelCauseFunc) *deadline {
	dl := &deadline{base: base, cancel: cancel, idle: idle}
	if idle > 0 {
		dl.mark()
	}
	// Held so that a timer firing at once finds dl.t set.
	dl.mu.Lock()
	dl.t = time.AfterFunc(d, dl.fire)
	dl.mu.Unlock()
	return dl
}

// mark records that a delta came now. It costs a clock read, and is safe
// while the timer fires.
func (dl *deadline) mark() { dl.last.Store(int64(time.Since(dl.base))) }

// toIdle turns the first-token timeout into the idle timeout, from now,
// at the attempt's first delta.
func (dl *deadline) toIdle(idle time.Duration) {
	dl.mark()
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.idle = idle
	if !dl.stopped {
		dl.t.Reset(idle)
	}
}

// stop ends the deadline for good.
func (dl *deadline) stop() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	dl.stopped = true
	dl.t.Stop()
}

// fire runs when the timer does: it cancels the attempt if its timeout
// has run out, or sets the timer again for what is left since the last
// delta.
func (dl *deadline) fire() {
	dl.mu.Lock()
	if dl.stopped {
		dl.mu.Unlock()
		return
	}
	cause := ErrFirstTokenTimeout
	if dl.idle > 0 {
		quiet := time.Since(dl.base) - time.Duration(dl.last.Load())
		if left := dl.idle - quiet; left > 0 {
			dl.t.Reset(left)
			dl.mu.Unlock()
			return
		}
		cause = ErrIdleTimeout
	}
	dl.stopped = true
	dl.mu.Unlock()
	dl.cancel(cause)
}
