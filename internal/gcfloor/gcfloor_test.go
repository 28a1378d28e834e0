package gcfloor

import (
	"runtime"
	"runtime/debug"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name        string
		floor, live uint64
		base, want  int
	}{
		{"nothing collected yet", 64 * mib, 0, 100, 100},
		// 3 MiB live would ask for 2033%, whose heap minimum (81 MiB)
		// would overshoot the floor: 1600% puts it at 64 MiB.
		{"a live heap under the heap minimum's reach", 64 * mib, 3 * mib, 100, 1600},
		{"goal at the floor", 64 * mib, 10 * mib, 100, 540},
		{"live at half the floor", 64 * mib, 32 * mib, 100, 100},
		{"live above the floor", 64 * mib, 100 * mib, 100, 100},
		{"the operator's GOGC is higher", 64 * mib, 30 * mib, 200, 200},
		{"a floor under the heap minimum", 2 * mib, 1 * mib, 100, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.floor, tc.live, tc.base); got != tc.want {
				t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.floor, tc.live, tc.base, got, tc.want)
			}
		})
	}
}

// recorder stands for debug.SetGCPercent: it keeps the percentage and
// signals each call on tuned.
type recorder struct {
	mu      sync.Mutex
	percent int
	tuned   chan struct{}
}

func newRecorder(percent int) *recorder {
	return &recorder{percent: percent, tuned: make(chan struct{}, 1)}
}

func (r *recorder) set(p int) int {
	r.mu.Lock()
	old := r.percent
	r.percent = p
	r.mu.Unlock()
	select {
	case r.tuned <- struct{}{}:
	default: // a signal is already waiting
	}
	return old
}

func (r *recorder) get() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.percent
}

// reset sets the percentage back to p and forgets the calls so far.
func (r *recorder) reset(p int) {
	r.mu.Lock()
	r.percent = p
	r.mu.Unlock()
	select {
	case <-r.tuned:
	default:
	}
}

// TestTunedAfterEachCollection: the percentage is set at Start and again
// after every collection, and Stop restores the operator's and ends the
// adjustments.
func TestTunedAfterEachCollection(t *testing.T) {
	r := newRecorder(150)
	f := start(1<<40, r.set) // a floor far above any live heap here
	for range 3 {
		r.reset(150)
		runtime.GC()
		<-r.tuned // the cleanup runs once the collection has swept
		if p := r.get(); p <= 150 {
			t.Fatalf("percent after a collection %d, want above 150", p)
		}
	}
	f.Stop()
	if p := r.get(); p != 150 {
		t.Fatalf("percent after Stop %d, want the operator's 150", p)
	}
	// A cleanup armed before Stop sets nothing when it runs.
	r.reset(150)
	runtime.GC()
	runtime.GC()
	if p := r.get(); p != 150 {
		t.Fatalf("percent set to %d after Stop", p)
	}
}

func TestOff(t *testing.T) {
	if f := Start(0); f != nil {
		t.Errorf("Start(0) = %v, want nil", f)
	}
	off := newRecorder(-1)
	if f := start(64<<20, off.set); f != nil || off.get() != -1 {
		t.Errorf("with GOGC off: %v, percent %d", f, off.get())
	}
	var f *Floor
	f.Stop() // what main defers when there is no floor
}

// TestStartSetsTheRuntime: the real collector is tuned after a
// collection, and put back by Stop.
func TestStartSetsTheRuntime(t *testing.T) {
	before := debug.SetGCPercent(100)
	debug.SetGCPercent(before)
	tuned := make(chan int, 1)
	f := start(1<<40, func(p int) int {
		old := debug.SetGCPercent(p)
		select {
		case tuned <- p:
		default:
		}
		return old
	})
	for len(tuned) > 0 { // what Start read and put back
		<-tuned
	}
	runtime.GC()
	<-tuned // the cleanup runs once the collection has swept
	during := debug.SetGCPercent(-1)
	debug.SetGCPercent(during)
	f.Stop()
	after := debug.SetGCPercent(100)
	debug.SetGCPercent(after)
	if during <= before || after != before {
		t.Errorf("GOGC %d before, %d with a floor, %d after Stop", before, during, after)
	}
}
