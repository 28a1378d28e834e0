package eventlog

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/redistest"
)

func newTestRedis(t *testing.T, lease time.Duration, maxLen int64) *Redis {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	return NewRedis(RedisOptions{Client: c, Lease: lease, Retention: time.Minute, MaxLen: maxLen})
}

func TestRedisLog(t *testing.T) {
	ctx := context.Background()
	r := newTestRedis(t, 10*time.Second, 1000)
	if _, err := r.Stat(ctx, "s"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown stream: %v", err)
	}
	if err := r.Create(ctx, "s", Meta{Key: "k", Model: "m"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Create(ctx, "s", Meta{}); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: %v", err)
	}
	if live, err := r.Append(ctx, "s", 0, []byte("a\nb\n")); !live || err != nil {
		t.Fatalf("Append: %v %v", live, err)
	}
	ev, err := r.Read(ctx, "s", 1, 10*time.Millisecond, nil)
	if got := strings.Join(collect(ev), " "); err != nil || got != "2:b" {
		t.Errorf("Read(1) = %q, %v", got, err)
	}
	// Nothing yet: an empty read after the block.
	if ev, err := r.Read(ctx, "s", 2, 10*time.Millisecond, nil); err != nil || !ev.Empty() {
		t.Errorf("Read past the end = %v, %v", collect(ev), err)
	}
	// The lease holds: finishing "if lost" does nothing.
	if lost, err := r.Finish(ctx, "s", 0, []byte("lost\n"), true); lost || err != nil {
		t.Errorf("finish if lost under a live lease: %v %v", lost, err)
	}
	if ok, _ := r.Finish(ctx, "s", 0, []byte("done\n"), false); !ok {
		t.Error("Finish refused")
	}
	if ok, _ := r.Finish(ctx, "s", 0, []byte("again\n"), false); ok {
		t.Error("second Finish accepted")
	}
	if live, _ := r.Append(ctx, "s", 0, []byte("late\n")); live {
		t.Error("a finished stream took an event")
	}
	st, err := r.Stat(ctx, "s")
	if err != nil || st.Last != 3 || !st.Finished || st.Key != "k" || st.Model != "m" {
		t.Errorf("Stat = %+v, %v", st, err)
	}
	ev, _ = r.Read(ctx, "s", 0, 10*time.Millisecond, nil)
	if got := strings.Join(collect(ev), " "); got != "1:a 2:b 3:done" {
		t.Errorf("replay = %q", got)
	}
}

func TestRedisLeaseAndReaders(t *testing.T) {
	ctx := context.Background()
	r := newTestRedis(t, 100*time.Millisecond, 1000)
	_ = r.Create(ctx, "s", Meta{})
	_, _ = r.Append(ctx, "s", 0, []byte("a\n"))
	if err := r.Attach(ctx, "s", "r1", time.Minute); err != nil {
		t.Fatal(err)
	}
	_ = r.Attach(ctx, "s", "r2", time.Minute)
	_ = r.Attach(ctx, "s", "r1", time.Minute) // renewal, not a third
	if n, err := r.Readers(ctx, "s"); n != 2 || err != nil {
		t.Errorf("readers = %d, %v", n, err)
	}
	_ = r.Detach(ctx, "s", "r1")
	if n, _ := r.Readers(ctx, "s"); n != 1 {
		t.Errorf("after detach: %d", n)
	}
	// Nobody renews: once the lease runs out, a reader ends the stream.
	deadline := time.Now().Add(5 * time.Second)
	for {
		lost, err := r.Finish(ctx, "s", 0, []byte("lost\n"), true)
		if err != nil {
			t.Fatal(err)
		}
		if lost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease never ran out")
		}
		if ev, _ := r.Read(ctx, "s", 1, 20*time.Millisecond, nil); !ev.Empty() {
			t.Fatalf("event before the lease ran out: %v", collect(ev))
		}
	}
	ev, _ := r.Read(ctx, "s", 1, 10*time.Millisecond, nil)
	if got := strings.Join(collect(ev), " "); got != "2:lost" {
		t.Errorf("after the lease: %q", got)
	}
	if live, _ := r.Renew(ctx, "s"); live {
		t.Error("a lost producer renewed")
	}
}

func TestRedisGap(t *testing.T) {
	ctx := context.Background()
	r := newTestRedis(t, 10*time.Second, 10)
	_ = r.Create(ctx, "s", Meta{})
	for range 50 {
		_, _ = r.Append(ctx, "s", 0, []byte("x\ny\n"))
	}
	if _, err := r.Read(ctx, "s", 0, 10*time.Millisecond, nil); !errors.Is(err, ErrGap) {
		t.Errorf("read from a trimmed start: %v", err)
	}
	if ev, err := r.Read(ctx, "s", 99, 10*time.Millisecond, nil); err != nil || strings.Join(collect(ev), " ") != "100:y" {
		t.Errorf("read of the tail: %v %v", collect(ev), err)
	}
}

// TestRedisReadCutsBatches: a write's events are one entry of the Redis
// Stream; a read after any event id starts exactly after it, inside an
// entry or at its end.
func TestRedisReadCutsBatches(t *testing.T) {
	ctx := context.Background()
	r := newTestRedis(t, 10*time.Second, 1000)
	_ = r.Create(ctx, "s", Meta{})
	for _, batch := range []string{"a\nb\n", "c\n", "d\ne\nf\n"} {
		if live, err := r.Append(ctx, "s", 0, []byte(batch)); !live || err != nil {
			t.Fatalf("Append(%q): %v %v", batch, live, err)
		}
	}
	want := []string{"1:a", "2:b", "3:c", "4:d", "5:e", "6:f"}
	for after := range 6 {
		ev, err := r.Read(ctx, "s", int64(after), 10*time.Millisecond, nil)
		if got := strings.Join(collect(ev), " "); err != nil || got != strings.Join(want[after:], " ") {
			t.Errorf("Read(%d) = %q, %v", after, got, err)
		}
	}
}

// TestRedisAppendRepeats: an append that names its first event can be
// repeated (a write whose reply was lost, retried): the events already
// there are not added again, with or without more after them in the
// retry; an append that would leave a hole is refused.
func TestRedisAppendRepeats(t *testing.T) {
	ctx := context.Background()
	r := newTestRedis(t, 10*time.Second, 1000)
	if err := r.Create(ctx, "s", Meta{}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		first int64
		lines string
	}{
		{1, "a\nb\n"},
		{1, "a\nb\n"}, // the same write again
		{3, "c\n"},
		{3, "c\nd\n"}, // again, with the next event
		{4, "d\n"},
	} {
		if live, err := r.Append(ctx, "s", w.first, []byte(w.lines)); !live || err != nil {
			t.Fatalf("Append(%d, %q): %v %v", w.first, w.lines, live, err)
		}
	}
	if _, err := r.Append(ctx, "s", 6, []byte("f\n")); !errors.Is(err, ErrOutOfStep) {
		t.Errorf("Append past a hole: %v, want ErrOutOfStep", err)
	}
	if ok, err := r.Finish(ctx, "s", 5, []byte("done\n"), false); !ok || err != nil {
		t.Fatalf("Finish: %v %v", ok, err)
	}
	ev, _ := r.Read(ctx, "s", 0, 10*time.Millisecond, nil)
	if got := strings.Join(collect(ev), " "); got != "1:a 2:b 3:c 4:d 5:done" {
		t.Errorf("replay = %q", got)
	}
}

// TestRedisDrop: a stream created but never given an event is deleted;
// one with events is left as it is (and an unknown one is no error).
func TestRedisDrop(t *testing.T) {
	ctx := context.Background()
	r := newTestRedis(t, 10*time.Second, 1000)
	for _, id := range []string{"empty", "written"} {
		if err := r.Create(ctx, id, Meta{Key: "k", Model: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Append(ctx, "written", 1, []byte("a\n")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"empty", "written", "unknown"} {
		if err := r.Drop(ctx, id); err != nil {
			t.Errorf("Drop(%s): %v", id, err)
		}
	}
	if _, err := r.Stat(ctx, "empty"); !errors.Is(err, ErrNotFound) {
		t.Errorf("dropped stream: %v", err)
	}
	if st, err := r.Stat(ctx, "written"); err != nil || st.Last != 1 {
		t.Errorf("stream with an event after Drop: %+v, %v", st, err)
	}
}

// TestKeysNameTheStreamsThree: the keys sliced from one string are the
// record's, the events' and the readers' of that stream, and share a hash
// tag (one Redis Cluster slot for the scripts that touch all three).
func TestKeysNameTheStreamsThree(t *testing.T) {
	for _, id := range []string{"s_1", "", "a}b"} {
		want := []string{"sg:stream:{" + id + "}", "sg:stream:{" + id + "}:events", "sg:stream:{" + id + "}:readers"}
		if got := keys(id); !slices.Equal(got, want) {
			t.Errorf("keys(%q) = %q, want %q", id, got, want)
		}
	}
}
