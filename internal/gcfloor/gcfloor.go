// Package gcfloor keeps the garbage collector's heap goal from falling
// below a floor: memory the operator sets aside so that a small heap is
// not collected over and over.
//
// Why: the runtime collects when the heap has grown by GOGC percent of
// what was live after the last collection. A gateway relaying streams
// keeps little alive (a few MiB for 64 streams) and allocates some 20 KiB
// a request: with GOGC=100 it collected some ten times a second under
// load, and the collector's marking, assists and write barriers cost
// about a tenth of its CPU per stream (issue 18). Raising GOGC for good
// would double every large heap as well (10,000 open streams hold some
// 200 MiB); a floor costs at most the floor, and nothing once the live
// heap is half of it: above that GOGC is what the operator set.
//
// After each collection the percentage is set so that the next goal is
// the floor, or GOGC's own goal where that is higher. GOMEMLIMIT still
// applies: the runtime collects earlier when the limit requires it.
package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it
// scales with GOGC (runtime.defaultHeapMinimum). Below it the goal does
// not follow the live heap, which is why the percentage is capped:
// heapMinimum·GOGC/100 must stay under the floor too.
const heapMinimum = 4 << 20

// Floor adjusts GOGC after each collection; Stop ends it and restores
// the percentage it found.
type Floor struct {
	floor uint64
	base  int
	mu    sync.Mutex
	// stopped is set by Stop: the next collection's callback does not
	// arm another.
	stopped bool
	sample  []metrics.Sample
	// set is where the percentage goes; debug.SetGCPercent outside tests.
	set func(int) int
}

// Start keeps the heap goal at least floor bytes. It does nothing (and
// returns nil) for a floor of 0 or when GOGC is off.
func Start(floor uint64) *Floor {
	return start(floor, debug.SetGCPercent)
}

func start(floor uint64, set func(int) int) *Floor {
	if floor == 0 {
		return nil
	}
	// The operator's GOGC (100 unless set), read by setting it back.
	base := set(100)
	set(base)
	if base < 0 {
		return nil
	}
	f := &Floor{floor: floor, base: base, set: set,
		sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	f.tune()
	f.arm()
	return f
}

// Stop ends the adjustments and restores the operator's GOGC.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	f.set(f.base)
}

// arm has tune run after the next collection: the runtime runs the
// cleanup of an object once a collection has found it unreachable, and
// this one is unreachable as soon as arm returns.
func (f *Floor) arm() {
	sentinel := new([16]byte)
	runtime.AddCleanup(sentinel, func(f *Floor) {
		if f.tune() {
			f.arm()
		}
	}, f)
}

// tune sets the percentage for the live heap the last collection left;
// it reports false once stopped.
func (f *Floor) tune() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.sample)
	f.set(Percent(f.floor, f.sample[0].Value.Uint64(), f.base))
	return true
}

// Percent is the GOGC that makes the next heap goal floor for a live
// heap of live bytes, or base if that is higher. Before the first
// collection (live is 0) it is base: a percentage set for a heap not yet
// measured would apply to whatever the first collection finds alive (a
// ledger's database opened meanwhile took one to 16 MiB live and a goal
// of 285), and the tuning after each collection is what keeps the goal
// near the floor.
func Percent(floor, live uint64, base int) int {
	if live == 0 || live >= floor {
		return base
	}
	p := min(floor*100/heapMinimum, (floor-live)*100/live)
	return max(base, int(min(p, math.MaxInt32)))
}
