package logbuf

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sink records each write it gets, and says so on a channel.
type sink struct {
	mu     sync.Mutex
	writes []string
	wrote  chan struct{}
}

func newSink() *sink { return &sink{wrote: make(chan struct{}, 16)} }

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.writes = append(s.writes, string(p))
	s.mu.Unlock()
	s.wrote <- struct{}{}
	return len(p), nil
}

func (s *sink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.writes...)
}

func TestLinesGoOutTogether(t *testing.T) {
	s := newSink()
	w := New(s, time.Hour)
	defer w.Close()
	for _, l := range []string{"one\n", "two\n", "three\n"} {
		if n, err := w.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if got := s.got(); len(got) != 0 {
		t.Fatalf("written before the flush: %q", got)
	}
	w.Flush()
	if got := s.got(); len(got) != 1 || got[0] != "one\ntwo\nthree\n" {
		t.Fatalf("writes %q, want the three lines in one", got)
	}
}

func TestTheDelayFlushes(t *testing.T) {
	s := newSink()
	w := New(s, time.Millisecond)
	defer w.Close()
	_, _ = w.Write([]byte("line\n"))
	<-s.wrote // the timer's flush; no sleep to guess its time
	_, _ = w.Write([]byte("again\n"))
	<-s.wrote // the timer is armed anew after a flush
	if got := s.got(); len(got) != 2 || got[0] != "line\n" || got[1] != "again\n" {
		t.Fatalf("writes %q", got)
	}
}

func TestAFullBufferIsWrittenAtOnce(t *testing.T) {
	s := newSink()
	w := New(s, time.Hour)
	defer w.Close()
	line := strings.Repeat("x", 1023) + "\n"
	for range maxHeld / len(line) {
		_, _ = w.Write([]byte(line))
	}
	if got := s.got(); len(got) != 1 || len(got[0]) != maxHeld {
		t.Fatalf("%d writes, want one of %d bytes", len(got), maxHeld)
	}
}

func TestWarningsAreNotHeld(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, time.Hour)
	defer w.Close()
	log := slog.New(Handler(slog.NewTextHandler(w, nil), w)).With("app", "gw")
	log.Info("request", "n", 1)
	if out.Len() != 0 {
		t.Fatalf("info line written at once: %q", out.String())
	}
	log.Warn("upstream down")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "msg=request") || !strings.Contains(lines[1], "upstream down") || !strings.Contains(lines[1], "app=gw") {
		t.Fatalf("after a warning: %q, want the held line then the warning", out.String())
	}
	log.WithGroup("g").Error("bad", "k", "v")
	if !strings.Contains(out.String(), "g.k=v") {
		t.Fatalf("error in a group not written at once: %q", out.String())
	}
}

func TestCloseWritesWhatIsLeft(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, time.Hour)
	_, _ = w.Write([]byte("last\n"))
	_ = w.Close()
	if out.String() != "last\n" {
		t.Fatalf("after Close: %q", out.String())
	}
	_, _ = w.Write([]byte("late\n"))
	if out.String() != "last\nlate\n" {
		t.Fatalf("a write after Close was held: %q", out.String())
	}
}

func TestNoDelayWritesThrough(t *testing.T) {
	var out bytes.Buffer
	w := New(&out, 0)
	_, _ = w.Write([]byte("now\n"))
	if out.String() != "now\n" {
		t.Fatalf("held with no delay: %q", out.String())
	}
}
