// Package offstack runs deep, one-off work of a request (decoding its
// body by reflection, opening the upstream through net/http) on another
// goroutine, so that the request's goroutine keeps a small stack for the
// rest of its life.
//
// Why it matters: a goroutine's stack only grows until the garbage
// collector finds less than a quarter of it in use, and a stream's
// handler spends its life deep in the relay, waiting for the next token.
// One deep call at the start left every stream, idle or not, with a
// 16 KiB stack where the relay needs 8 (issue 18: memory per open
// stream). The deep stacks are those of a few workers instead, each
// serving one call after another.
package offstack

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
)

// Run calls f on another goroutine and waits for it to return. A panic
// in f is raised again in the caller, so that the request's own recovery
// sees it: http.ErrAbortHandler as it is, any other value with f's stack
// appended (the caller's stack would not say where it happened). f must
// return on its own: Run waits for it whatever the caller's context says,
// which is what keeps the work from outliving its request.
//
// The goroutine is one of a few kept waiting with their stacks grown
// (idle), or a new one when none is free. A goroutine started for each
// call got a 2 KiB stack, grew it to 16 KiB (zeroing a 9 KiB frame) and
// gave it back when it ended: some 2 µs a call, three calls a stream;
// with the goroutine's start and end, 4.6% of the gateway's CPU with
// 64-token streams back to back (issue 18).
func Run(f func()) {
	var w *worker
	select {
	case w = <-idle:
	default:
		w = &worker{work: make(chan func()), done: make(chan any)}
		go w.loop()
	}
	w.work <- f
	if v := <-w.done; v != nil {
		panic(v)
	}
}

// idle holds the workers waiting for work, at most maxIdle of them.
var idle = make(chan *worker, maxIdle)

// maxIdle bounds the workers kept: 1 MiB of stacks at most. Calls at once
// are those of the streams opening at that moment: a call opening an
// upstream lasts until its headers are in, a millisecond or more under
// load, and with 64 streams back to back some ten are often under way
// (a pool of 8 missed often enough to leave half the cost in place).
const maxIdle = 64

// worker is a goroutine that runs Run's calls one after another.
type worker struct {
	work chan func()
	// done carries nil when a call returned, or what it panicked with.
	done chan any
}

// IdleWorker is where a worker waits for work, for leak checks to leave
// out (goleak.IgnoreTopFunction): the workers kept idle are the package's,
// bounded, and not a leak; one found anywhere else is.
const IdleWorker = "github.com/streamgate/gateway/internal/offstack.(*worker).loop"

func (w *worker) loop() {
	growStack()
	for f := range w.work {
		if !w.call(f) {
			return // after a panic, a fresh goroutine serves the next call
		}
		select {
		case idle <- w:
		default:
			return
		}
	}
}

// call runs f and tells Run how it ended. It reports false when f
// panicked; when f called runtime.Goexit, the worker ends there, Run
// returning as if f had.
func (w *worker) call(f func()) (ok bool) {
	defer func() {
		var v any
		if !ok {
			if v = recover(); v != nil && v != http.ErrAbortHandler {
				v = fmt.Sprintf("%v\n\non the offstack worker that ran it:\n%s", v, debug.Stack())
			}
		}
		w.done <- v
	}()
	f()
	return true
}

// growStack grows a new worker's stack to 16 KiB in one step, while it
// holds a single frame. The work Run is given goes 7 to 12 KiB deep:
// starting from 2 KiB, its stack would otherwise double three times, each
// time copying and adjusting every frame of that deep call chain: 4% of
// the gateway's CPU with 64-token streams back to back (issue 18). The
// frame is zeroed once, and the worker keeps the stack for the calls
// after (until a collection finds it mostly unused and halves it).
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
