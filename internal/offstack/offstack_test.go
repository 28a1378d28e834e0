package offstack

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(IdleWorker)) }

// TestRunWaitsForItsWork: what f wrote is there when Run returns, and f
// ran on another goroutine (its stack is not the caller's).
func TestRunWaitsForItsWork(t *testing.T) {
	var got int
	Run(func() { got = deep(200) })
	if got != 200 {
		t.Fatalf("got %d, want 200", got)
	}
}

func deep(n int) int {
	if n == 0 {
		return 0
	}
	var pad [64]byte
	pad[n%64] = 1
	return deep(n-1) + int(pad[n%64])
}

// TestRunRaisesPanicsInTheCaller: the request's own recovery must see a
// panic of f: http.ErrAbortHandler unchanged (net/http treats it as a
// quiet abort), anything else with f's stack in it.
func TestRunRaisesPanicsInTheCaller(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value any
		check func(any) bool
	}{
		{"abort", http.ErrAbortHandler, func(v any) bool { return v == http.ErrAbortHandler }},
		{"value", errors.New("boom"), func(v any) bool {
			s, ok := v.(string)
			return ok && strings.HasPrefix(s, "boom") && strings.Contains(s, "offstack.TestRunRaisesPanicsInTheCaller")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if v := recover(); !tc.check(v) {
					t.Errorf("recovered %#v", v)
				}
			}()
			Run(func() { panic(tc.value) })
			t.Error("Run returned after a panic")
		})
	}
}

// BenchmarkRun: a request's one-off work some 11 KiB deep (deep's 100
// frames), run off the caller's stack. Without growStack the new
// goroutine's stack grows 2 → 4 → 8 → 16 KiB under the deepening call,
// copying its frames each time; with it, once, while it holds one frame.
func BenchmarkRun(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Run(func() { deep(100) })
	}
}

// TestHereIsInherited: a context derived from one marked Here (a timeout
// over it, as every Redis call adds) still says so; others do not.
func TestHereIsInherited(t *testing.T) {
	timeout, cancel := context.WithTimeout(Here(context.Background()), time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want bool
	}{
		{"background", context.Background(), false},
		{"here", Here(context.Background()), true},
		{"timeout over here", timeout, true},
	} {
		if got := RunsHere(tc.ctx); got != tc.want {
			t.Errorf("%s: RunsHere = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRunAfterGoexitAndPanic: a call that ends its goroutine
// (runtime.Goexit, as t.FailNow does) returns as if it had returned, one
// that panics raises it; both take their worker with them, and the calls
// after are served as before.
func TestRunAfterGoexitAndPanic(t *testing.T) {
	Run(runtime.Goexit)
	func() {
		defer func() { _ = recover() }()
		Run(func() { panic("boom") })
	}()
	var got int
	Run(func() { got = deep(10) })
	if got != 10 {
		t.Fatalf("got %d, want 10", got)
	}
}

// TestRunManyAtOnce: calls at once each get a goroutine of their own,
// however many there are (every one below waits for all the others to
// start), and no more workers are kept than idle holds.
func TestRunManyAtOnce(t *testing.T) {
	const n = 100
	var started, all sync.WaitGroup
	started.Add(n)
	all.Add(n)
	for range n {
		go func() {
			defer all.Done()
			Run(func() {
				started.Done()
				started.Wait()
			})
		}()
	}
	all.Wait()
	if len(idle) > cap(idle) {
		t.Fatalf("%d idle workers, more than %d", len(idle), cap(idle))
	}
}
