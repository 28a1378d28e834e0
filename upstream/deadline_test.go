package upstream

import (
	"errors"
	"testing"
	"time"
)

// cancelled is a deadline's cancel function that hands its cause, and
// when it came, to the test.
func cancelled() (func(error), <-chan error) {
	c := make(chan error, 1)
	return func(err error) { c <- err }, c
}

// TestDeadlineFires: a deadline armed as the first-token timeout, or as
// the idle timeout of an attempt without one (from its first delta),
// cancels with that timeout's cause, and not before it.
func TestDeadlineFires(t *testing.T) {
	const d = 30 * time.Millisecond
	for _, tc := range []struct {
		name string
		idle time.Duration
		want error
	}{
		{"first token", 0, ErrFirstTokenTimeout},
		{"idle without a first-token timeout", d, ErrIdleTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cancel, got := cancelled()
			armed := time.Now()
			// The attempt began earlier: the timeout counts from arming.
			dl := newDeadline(armed.Add(-time.Minute), d, tc.idle, cancel)
			defer dl.stop()
			if err := <-got; !errors.Is(err, tc.want) {
				t.Fatalf("cancelled with %v, want %v", err, tc.want)
			}
			if waited := time.Since(armed); waited < d {
				t.Errorf("cancelled after %v, before the timeout of %v", waited, d)
			}
		})
	}
}

// TestDeadlineIdleCountsFromTheLastDelta: deltas that keep coming within
// the idle timeout keep the attempt alive though the timer, never moved,
// fires several times meanwhile; once they stop, the attempt is cancelled
// with the idle timeout, no earlier than that after the last one.
func TestDeadlineIdleCountsFromTheLastDelta(t *testing.T) {
	const idle = 150 * time.Millisecond
	cancel, got := cancelled()
	dl := newDeadline(time.Now(), time.Hour, 0, cancel)
	defer dl.stop()
	dl.toIdle(idle)
	// Deltas 10 ms apart for four idle timeouts: the timer, set once,
	// fires in between and sets itself again each time.
	lastMark, maxGap := time.Now(), time.Duration(0)
	for end := lastMark.Add(4 * idle); time.Now().Before(end); {
		select {
		case err := <-got:
			if maxGap < idle {
				t.Fatalf("cancelled (%v) while deltas came at most %v apart, within the idle timeout %v", err, maxGap, idle)
			}
			return // the machine stalled the marks past the timeout: a right cancel
		case <-time.After(10 * time.Millisecond):
		}
		now := time.Now()
		maxGap = max(maxGap, now.Sub(lastMark))
		dl.mark()
		lastMark = now
	}
	if err := <-got; !errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("cancelled with %v, want the idle timeout", err)
	}
	if quiet := time.Since(lastMark); quiet < idle {
		t.Errorf("cancelled %v after the last delta, before the idle timeout %v", quiet, idle)
	}
}

// TestDeadlineStoppedNeverFires: once stop returns, a deadline cancels
// nothing, even when its timer was already due and its callback runs
// after (the callback of an attempt that is over cannot reach the next).
func TestDeadlineStoppedNeverFires(t *testing.T) {
	for range 50 {
		cancel, got := cancelled()
		dl := newDeadline(time.Now(), time.Microsecond, 0, cancel)
		dl.stop()
		before := len(got) // a fire that ran before stop may have cancelled
		dl.fire()          // as the timer's callback would, late
		if len(got) != before {
			t.Fatal("a stopped deadline cancelled its attempt")
		}
	}
}
