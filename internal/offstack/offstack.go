// Package offstack runs deep, one-off work of a request (decoding its
// body by reflection, opening the upstream through net/http) on a
// goroutine of its own, so that the request's goroutine keeps a small
// stack for the rest of its life.
//
// Why it matters: a goroutine's stack only grows until the garbage
// collector finds less than a quarter of it in use, and a stream's
// handler spends its life deep in the relay, waiting for the next token.
// One deep call at the start left every stream, idle or not, with a
// 16 KiB stack where the relay needs 8 (issue 18: memory per open
// stream). The short-lived goroutine ends with the work and its stack
// goes back to the runtime for the next.
package offstack

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
)

// Run calls f on a new goroutine and waits for it to return. A panic in f
// is raised again in the caller, so that the request's own recovery sees
// it: http.ErrAbortHandler as it is, any other value with f's stack
// appended (the caller's stack would not say where it happened). f must
// return on its own: Run waits for it whatever the caller's context says,
// which is what keeps the goroutine from outliving its request.
func Run(f func()) {
	r := runners.Get().(*runner)
	r.f = f
	go r.run()
	<-r.done
	v := r.panicked
	r.f, r.panicked = nil, nil
	runners.Put(r)
	if v != nil {
		panic(v)
	}
}

// runner is one call of Run: pooled with its channel, so that a call
// costs one allocation (the goroutine's closure) rather than three.
type runner struct {
	f        func()
	panicked any
	done     chan struct{}
}

var runners = sync.Pool{New: func() any { return &runner{done: make(chan struct{}, 1)} }}

func (r *runner) run() {
	growStack()
	defer func() {
		if v := recover(); v != nil {
			r.panicked = v
			if v != http.ErrAbortHandler {
				r.panicked = fmt.Sprintf("%v\n\non the goroutine offstack.Run started:\n%s", v, debug.Stack())
			}
		}
		r.done <- struct{}{}
	}()
	r.f()
}

// growStack grows a new goroutine's stack to 16 KiB in one step, while
// it holds a single frame. The work Run is given goes 7 to 12 KiB deep:
// starting from 2 KiB, its stack would otherwise double three times, each
// time copying and adjusting every frame of that deep call chain: 4% of
// the gateway's CPU with 64-token streams back to back (issue 18). The
// frame is zeroed once (some 100 ns) and the stack goes back to the
// runtime's cache when the goroutine ends.
//
//go:noinline
func growStack() {
	var frame [growFrame]byte
	touch(&frame)
}

// growFrame is a frame that does not fit 8 KiB but does 16 (the runtime
// grows a stack to the smallest power of two the frame needs).
const growFrame = 9 << 10

//go:noinline
func touch(*[growFrame]byte) {}

// Here marks ctx as belonging to a goroutine whose stack does not matter
// (one started for the work, not a stream's handler), so that work which
// would hop to Run's goroutine under it (Redis commands, see the
// gateway's hook) runs where it is called: the hop would cost a goroutine
// and buy nothing.
func Here(ctx context.Context) context.Context { return context.WithValue(ctx, hereKey{}, true) }

// RunsHere reports whether ctx was marked by Here.
func RunsHere(ctx context.Context) bool { return ctx.Value(hereKey{}) != nil }

type hereKey struct{}
