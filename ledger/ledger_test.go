package ledger

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamgate/gateway/internal/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// databases opens a ledger database of each backend for t.
func databases(t *testing.T) map[string]func() *DB {
	return map[string]func() *DB{
		"sqlite": func() *DB {
			db, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "usage.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
		"postgres": func() *DB {
			srv := pgtest.Start(t)
			db, err := OpenPostgres(context.Background(), srv.DSN)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
	}
}

var day1 = time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)

func entry(id, key, model string, at time.Time, cost float64) Entry {
	return Entry{Time: at, RequestID: id, Key: key, Model: model, Provider: "p", Deployment: "d", Endpoint: "chat", Status: 200, End: "done",
		PromptTokens: 100, CachedTokens: 40, CompletionTokens: 20, ReasoningTokens: 5, Cost: cost, Priced: true,
		TTFT: 150 * time.Millisecond, Duration: time.Second}
}

// TestWriteAndSum: rows written (a retried batch's again, which is a
// no-op) sum by day, key and model within a time range; the schema is
// migrated once and reopening finds it current.
func TestWriteAndSum(t *testing.T) {
	for name, open := range databases(t) {
		t.Run(name, func(t *testing.T) {
			db := open()
			ctx := context.Background()
			rows := []Entry{
				entry("r1", "alice", "gpt", day1, 0.01),
				entry("r2", "alice", "gpt", day1.Add(2*time.Minute), 0.02), // the next day, UTC
				entry("r3", "bob", "claude", day1.Add(3*time.Minute), 0.5),
				{Time: day1.Add(4 * time.Minute), RequestID: "r4", Key: "bob", Model: "claude", Status: 429, ErrorCode: "budget_exceeded"},
			}
			if err := db.Write(ctx, rows); err != nil {
				t.Fatal(err)
			}
			if err := db.Write(ctx, rows[:2]); err != nil {
				t.Fatalf("a retried batch: %v", err)
			}
			all, err := db.Usage(ctx, Query{From: day1.Add(-time.Hour), To: day1.Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 1 || all[0].Requests != 4 || all[0].Errors != 1 || all[0].PromptTokens != 300 || all[0].CachedTokens != 120 ||
				fmt.Sprintf("%.2f", all[0].Cost) != "0.53" {
				t.Errorf("total %+v", all)
			}
			by, err := db.Usage(ctx, Query{From: day1.Add(-time.Hour), To: day1.Add(time.Hour), By: []string{"day", "key", "model"}})
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"2026-11-30/alice/gpt/1", "2026-12-01/alice/gpt/1", "2026-12-01/bob/claude/2"}
			if len(by) != len(want) {
				t.Fatalf("groups %+v", by)
			}
			for i, g := range by {
				if got := fmt.Sprintf("%s/%s/%s/%d", g.Day, g.Key, g.Model, g.Requests); got != want[i] {
					t.Errorf("group %d = %s, want %s", i, got, want[i])
				}
			}
			bob, _ := db.Usage(ctx, Query{From: day1, To: day1.Add(time.Hour), Key: "bob"})
			if len(bob) != 1 || bob[0].Requests != 2 {
				t.Errorf("bob %+v", bob)
			}
			if _, err := db.Usage(ctx, Query{By: []string{"prompt"}}); err == nil {
				t.Error("grouped by a column that is not a group")
			}
			if err := db.migrate(ctx); err != nil {
				t.Errorf("migrating a current schema: %v", err)
			}
		})
	}
}

// counts observes a ledger; failures are also signalled on failedCh.
type counts struct {
	written, dropped, failed atomic.Int64
	failedCh                 chan struct{}
}

func (c *counts) LedgerWritten(n int) { c.written.Add(int64(n)) }
func (c *counts) LedgerDropped()      { c.dropped.Add(1) }
func (c *counts) LedgerFailed() {
	c.failed.Add(1)
	select {
	case c.failedCh <- struct{}{}:
	default:
	}
}

// TestDatabaseDown: while PostgreSQL is down, rows wait in the queue
// (and past it are dropped and counted) and Record never blocks; once it
// is back, every row that waited is written, once.
func TestDatabaseDown(t *testing.T) {
	srv := pgtest.Start(t)
	db, err := OpenPostgres(context.Background(), srv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	obs := &counts{failedCh: make(chan struct{}, 1)}
	wrote := make(chan int, 100)
	l := New(db, Options{FlushInterval: 20 * time.Millisecond, BatchSize: 10, QueueSize: 50, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: obs})
	l.written = func(n int) { wrote <- n }
	defer l.Close(context.Background())

	l.Record(entry("before", "k", "m", day1, 0))
	<-wrote
	srv.Stop()
	for i := range 70 { // more than a batch and a queue hold
		l.Record(entry(fmt.Sprint("down-", i), "k", "m", day1, 0))
	}
	select {
	case <-obs.failedCh:
	case <-time.After(20 * time.Second):
		t.Fatal("no write failed while the database was down")
	}
	dropped := obs.dropped.Load()
	if dropped < 10 {
		t.Errorf("%d dropped of 70 rows for a batch of 10 and a queue of 50", dropped)
	}
	srv.Restart()
	want := 71 - dropped
	for obs.written.Load() < want {
		select {
		case <-wrote:
		case <-time.After(20 * time.Second):
			t.Fatalf("written %d of %d after the database came back", obs.written.Load(), want)
		}
	}
	total, err := db.Usage(context.Background(), Query{From: day1, To: day1.Add(time.Second)})
	if err != nil || len(total) != 1 || total[0].Requests != want {
		t.Errorf("rows %+v (%v), want %d", total, err, want)
	}
}

// TestCloseWritesWhatIsQueued: at shutdown, the rows queued are written
// before the database is closed.
func TestCloseWritesWhatIsQueued(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	db, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	l := New(db, Options{FlushInterval: time.Hour, BatchSize: 7, QueueSize: 100, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: &counts{}})
	for i := range 30 {
		l.Record(entry(fmt.Sprint("r", i), "k", "m", day1, 0.001))
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	again, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	total, err := again.Usage(context.Background(), Query{From: day1, To: day1.Add(time.Second)})
	if err != nil || len(total) != 1 || total[0].Requests != 30 {
		t.Errorf("after Close: %+v %v", total, err)
	}
}
