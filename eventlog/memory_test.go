package eventlog

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamgate/gateway/internal/testclock"
)

// collect returns the events' ids and lines as "id:line" strings.
func collect(ev Events) []string {
	var out []string
	ev.Each(func(id int64, line []byte) { out = append(out, fmt.Sprintf("%d:%s", id, line)) })
	return out
}

func TestMemoryAppendRead(t *testing.T) {
	m := NewMemory(MemoryOptions{})
	l, err := m.Create("s1", Meta{Key: "k", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("s1", Meta{}); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: %v", err)
	}
	l.Append([]byte("a\nb\n"))
	l.Append([]byte("c\n"))
	for _, tc := range []struct {
		after int64
		want  string
	}{{0, "1:a 2:b 3:c"}, {1, "2:b 3:c"}, {2, "3:c"}} {
		ev, fin, _, err := l.Read(tc.after)
		if got := strings.Join(collect(ev), " "); err != nil || fin || got != tc.want {
			t.Errorf("Read(%d) = %q, %v, %v; want %q", tc.after, got, fin, err, tc.want)
		}
	}

	// Caught up: a channel that closes on the next append.
	ev, fin, wait, err := l.Read(3)
	if err != nil || fin || !ev.Empty() || wait == nil {
		t.Fatalf("caught up: %v %v %v", ev, fin, err)
	}
	go l.Finish([]byte("end\n"))
	<-wait
	ev, _, _, _ = l.Read(3)
	if got := strings.Join(collect(ev), " "); got != "4:end" {
		t.Errorf("after finish: %q", got)
	}
	if _, fin, _, _ := l.Read(4); !fin {
		t.Error("finished log not reported finished")
	}
	if l.Append([]byte("late\n")) || l.Finish([]byte("again\n")) {
		t.Error("a finished log took more events")
	}
	if last, fin := l.Last(); last != 4 || !fin {
		t.Errorf("Last = %d, %v", last, fin)
	}
}

// TestFinishedLogKeepsNoSlack: a finished log, kept for its retention,
// holds its events and not the room appending left after them; a reader
// given events before the finish still reads them whole.
func TestFinishedLogKeepsNoSlack(t *testing.T) {
	m := NewMemory(MemoryOptions{})
	l, err := m.Create("s1", Meta{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		l.Append(fmt.Appendf(nil, "event %d\n", i))
	}
	early, _, _, _ := l.Read(298)
	l.Finish([]byte("end\n"))
	if cap(l.data)-len(l.data) > len(l.data)/8 || cap(l.ends)-len(l.ends) > len(l.ends)/8 {
		t.Errorf("finished log holds %d of %d bytes and %d of %d ends", len(l.data), cap(l.data), len(l.ends), cap(l.ends))
	}
	if got := strings.Join(collect(early), " "); got != "299:event 298 300:event 299" {
		t.Errorf("events read before the finish: %q", got)
	}
	ev, _, _, _ := l.Read(299)
	if got := strings.Join(collect(ev), " "); got != "300:event 299 301:end" {
		t.Errorf("after the finish: %q", got)
	}
}

func TestMemoryReaders(t *testing.T) {
	m := NewMemory(MemoryOptions{})
	l, _ := m.Create("s", Meta{})
	var mu sync.Mutex
	var seen []int
	l.OnReaders(func(n int) { mu.Lock(); seen = append(seen, n); mu.Unlock() })
	r1 := l.Attach(0)
	r2 := l.Attach(0)
	r1.Detach()
	r1.Detach() // idempotent
	r2.Detach()
	if fmt.Sprint(seen) != "[1 2 1 0]" || l.Readers() != 0 {
		t.Errorf("reader counts %v, now %d", seen, l.Readers())
	}
}

func TestMemoryRetention(t *testing.T) {
	clock := testclock.New(time.Unix(1000, 0))
	m := NewMemory(MemoryOptions{Retention: time.Minute, Now: clock.Now})
	live, _ := m.Create("live", Meta{})
	live.Append([]byte("x\n"))
	done, _ := m.Create("done", Meta{})
	done.Finish([]byte("x\n"))
	clock.Add(59 * time.Second)
	if _, err := m.Get("done"); err != nil {
		t.Fatalf("within retention: %v", err)
	}
	clock.Add(2 * time.Second)
	if _, err := m.Get("done"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after retention: %v", err)
	}
	if _, err := m.Get("live"); err != nil {
		t.Errorf("a live log expired: %v", err)
	}
	if n, b := m.Stats(); n != 1 || b != int64(len("x\n")+eventOverhead) {
		t.Errorf("stats %d streams, %d bytes", n, b)
	}
}

func TestMemoryBounds(t *testing.T) {
	line := []byte(strings.Repeat("x", 91) + "\n") // 100 bytes with overhead
	t.Run("per stream", func(t *testing.T) {
		for _, o := range []MemoryOptions{{MaxStreamBytes: 1000}, {MaxStreamEvents: 10}} {
			m := NewMemory(o)
			l, _ := m.Create("s", Meta{})
			for range 25 {
				l.Append(line)
			}
			if _, b := m.Stats(); b != 1000 {
				t.Errorf("%+v: %d bytes held, want 1000", o, b)
			}
			if _, _, _, err := l.Read(14); !errors.Is(err, ErrGap) {
				t.Errorf("%+v: read before the window: %v", o, err)
			}
			ev, _, _, err := l.Read(15)
			if got := collect(ev); err != nil || len(got) != 10 || !strings.HasPrefix(got[0], "16:") {
				t.Errorf("%+v: window = %d events from %v (%v)", o, len(got), got[:1], err)
			}
		}
	})
	t.Run("in total", func(t *testing.T) {
		const total = 5000
		m := NewMemory(MemoryOptions{MaxTotalBytes: total, MaxStreamBytes: 2000})
		for i := range 40 {
			l, _ := m.Create(fmt.Sprint("s", i), Meta{})
			for range 15 {
				l.Append(line)
				// The bound, but for the newest event of each
				// live log, which stays.
				if _, b := m.Stats(); b > total+int64(i/2+1)*100 {
					t.Fatalf("stream %d: %d bytes held, bound %d", i, b, total)
				}
			}
			if i%2 == 0 {
				l.Finish(line)
			}
		}
		// Finished streams went oldest first: those kept are the
		// newest.
		kept := ""
		for i := 0; i < 40; i += 2 {
			if _, err := m.Get(fmt.Sprint("s", i)); err == nil {
				kept += "k"
			} else {
				kept += "-"
			}
		}
		if strings.Contains(kept, "k-") || !strings.HasPrefix(kept, "-") {
			t.Errorf("finished streams kept (oldest first): %s", kept)
		}
		if _, b := m.Stats(); b > total+20*100 {
			t.Errorf("%d bytes held", b)
		}
	})
}

// TestMemoryReaderHoldsEvents: an attached reader's unread events are
// never dropped; the producer waits for room instead, until the reader
// reads on or leaves.
func TestMemoryReaderHoldsEvents(t *testing.T) {
	line := []byte(strings.Repeat("x", 91) + "\n")
	m := NewMemory(MemoryOptions{MaxStreamBytes: 300})
	l, _ := m.Create("s", Meta{})
	r := l.Attach(0)
	for range 5 {
		l.Append(line)
	}
	if _, b := m.Stats(); b != 500 {
		t.Fatalf("%d bytes held while the reader read nothing, want all 500", b)
	}
	room := make(chan struct{})
	go func() { l.WaitRoom(nil); close(room) }()
	select {
	case <-room:
		t.Fatal("WaitRoom returned while the reader held the log over its bound")
	default:
	}
	ev, _, _, err := r.Read(0)
	if got := collect(ev); err != nil || len(got) != 5 {
		t.Fatalf("the reader got %v (%v)", got, err)
	}
	if _, _, _, err := r.Read(5); err != nil { // it has all five now
		t.Fatal(err)
	}
	<-room
	if _, b := m.Stats(); b != 300 {
		t.Errorf("%d bytes held once read, want 300", b)
	}

	// Readers that leave release what they held.
	r2 := l.Attach(5)
	for range 4 {
		l.Append(line)
	}
	done := make(chan struct{})
	go func() { l.WaitRoom(nil); close(done) }()
	r2.Detach()
	r.Detach()
	<-done
	if _, b := m.Stats(); b != 300 {
		t.Errorf("%d bytes held once the readers left, want 300", b)
	}
}

// TestStatsExpire: an idle store (no new streams) drops expired logs when
// asked for its figures: the gauge reports what is held, and the memory
// comes back.
func TestStatsExpire(t *testing.T) {
	clock := testclock.New(time.Now())
	m := NewMemory(MemoryOptions{MaxStreamBytes: 1 << 20, MaxStreamEvents: 100, MaxTotalBytes: 1 << 20, Retention: time.Minute, Now: clock.Now})
	l, _ := m.Create("s", Meta{})
	l.Finish([]byte("{\"type\":\"done\"}\n"))
	if n, b := m.Stats(); n != 1 || b == 0 {
		t.Fatalf("held: %d logs, %d bytes", n, b)
	}
	clock.Add(2 * time.Minute)
	if n, b := m.Stats(); n != 0 || b != 0 {
		t.Errorf("after the retention: %d logs, %d bytes still held", n, b)
	}
}
