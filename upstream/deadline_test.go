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

// TestDeadlineFirstToken: before the first delta the deadline is the
// first-token timeout, and it does not end before it.
func TestDeadlineFirstToken(t *testing.T) {
	cancel, got := cancelled()
	began := time.Now()
	dl := newDeadline(began, 30*time.Millisecond, 0, cancel)
	defer dl.stop()
	if err := <-got; !errors.Is(err, ErrFirstTokenTimeout) {
		t.Fatalf("cancelled with %v, want the first-token timeout", err)
	}
	if waited := time.Since(began); waited < 30*time.Millisecond {
		t.Errorf("cancelled after %v, before the first-token timeout", waited)
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

// TestDeadlineIdleWithoutFirstTokenTimeout: an attempt with no
// first-token timeout gets its idle deadline at the first delta.
func TestDeadlineIdleWithoutFirstTokenTimeout(t *testing.T) {
	cancel, got := cancelled()
	armed := time.Now()
	dl := newDeadline(armed.Add(-time.Minute), 30*time.Millisecond, 30*time.Millisecond, cancel)
	defer dl.stop()
	if err := <-got; !errors.Is(err, ErrIdleTimeout) {
		t.Fatalf("cancelled with %v, want the idle timeout", err)
	}
	if waited := time.Since(armed); waited < 30*time.Millisecond {
		t.Errorf("cancelled after %v, before the idle timeout", waited)
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
