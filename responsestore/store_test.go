package responsestore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/internal/testclock"
)

// TestMemory: records are kept for the retention, replaced by id, and
// the oldest dropped past the byte bound.
func TestMemory(t *testing.T) {
	clock := testclock.New(time.Unix(1000, 0))
	m := NewMemory(time.Hour, 300, clock.Now)
	ctx := context.Background()
	put := func(id string, n int) {
		if err := m.Put(ctx, &Record{ID: id, Response: []byte(strings.Repeat("x", n))}); err != nil {
			t.Fatal(err)
		}
	}
	put("a", 100)
	put("a", 50) // replaced, not counted twice
	put("b", 100)
	if r, err := m.Get(ctx, "a"); err != nil || len(r.Response) != 50 {
		t.Fatalf("a: %v %v", r, err)
	}
	put("c", 200) // over 300 bytes: a, the oldest, goes
	if _, err := m.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a kept past the bound: %v", err)
	}
	if _, err := m.Get(ctx, "c"); err != nil {
		t.Errorf("c: %v", err)
	}
	clock.Add(time.Hour)
	if _, err := m.Get(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("c kept past its retention: %v", err)
	}
	if ok, _ := m.Delete(ctx, "c"); ok {
		t.Error("deleted an expired record")
	}
}
