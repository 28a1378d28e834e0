// Package logbuf batches log lines into fewer writes. The access log is a
// line per request, and each line was its own write(2): at a few thousand
// short streams a second, a system call per request that a byte-copying
// proxy does not make (issue 18). Lines wait at most the flush delay, or
// until 32 KiB are held; a warning or an error goes out at once, with
// everything before it, so what an operator needs to see now is never
// held back. Close writes what is left.
package logbuf

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// maxHeld is what a Writer holds before it writes without waiting.
const maxHeld = 32 << 10

// Writer holds what is written to it for up to its delay, then writes it
// to the underlying writer in one piece. It is safe for concurrent use.
type Writer struct {
	mu    sync.Mutex
	out   io.Writer
	delay time.Duration
	buf   []byte
	timer *time.Timer
	// armed means the timer will flush buf.
	armed  bool
	closed bool
}

// New returns a Writer onto out that holds lines for at most delay; with
// delay 0 every write goes straight through.
func New(out io.Writer, delay time.Duration) *Writer {
	w := &Writer{out: out, delay: delay}
	if delay > 0 {
		w.timer = time.AfterFunc(time.Hour, w.Flush)
		w.timer.Stop()
	}
	return w
}

// Write holds p (a whole line: slog handlers write one per call) until the
// next flush. The underlying writer's errors are not reported: there is
// nowhere to report a log that cannot be written.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer == nil || w.closed {
		return w.out.Write(p)
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= maxHeld {
		w.flush()
	} else if !w.armed {
		w.armed = true
		w.timer.Reset(w.delay)
	}
	return len(p), nil
}

// Flush writes what is held.
func (w *Writer) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flush()
}

// flush writes buf; w.mu is held.
func (w *Writer) flush() {
	if w.armed {
		w.timer.Stop()
		w.armed = false
	}
	if len(w.buf) == 0 {
		return
	}
	_, _ = w.out.Write(w.buf)
	if cap(w.buf) > 2*maxHeld {
		// One huge line: do not keep its buffer.
		w.buf = nil
	} else {
		w.buf = w.buf[:0]
	}
}

// Close writes what is held; later writes go straight through.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flush()
	w.closed = true
	return nil
}

// Handler wraps a slog handler writing to w so that records at warn level
// and above are written at once, with everything held before them.
func Handler(h slog.Handler, w *Writer) slog.Handler { return handler{h, w} }

type handler struct {
	slog.Handler
	w *Writer
}

func (h handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.w.Flush()
	}
	return err
}

func (h handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return handler{h.Handler.WithAttrs(attrs), h.w}
}

func (h handler) WithGroup(name string) slog.Handler {
	return handler{h.Handler.WithGroup(name), h.w}
}
