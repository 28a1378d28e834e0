// Package ledger records every request's usage and cost in a database,
// one row per request, written in batches off the request path: a
// request hands its row to a bounded queue and goes on; a writer
// goroutine inserts the rows every flush interval or batch. When the
// database is slow or down the writer keeps its batch and retries, the
// queue fills, and past it rows are dropped and counted: no request ever
// waits for the ledger.
package ledger

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Entry is one request's row.
type Entry struct {
	Time      time.Time
	RequestID string
	// Key names the API key (never the key itself); empty when auth is
	// off.
	Key, Model, Provider, Deployment, Endpoint string
	Status                                     int
	// End says how a stream ended (done, upstream_error, client_gone,
	// ...); empty for a request refused before it streamed.
	End, ErrorCode string

	PromptTokens, CachedTokens, CacheWriteTokens, CompletionTokens, ReasoningTokens int
	UsageEstimated                                                                  bool
	// Cost is in dollars, when Priced.
	Cost           float64
	Priced         bool
	TTFT, Duration time.Duration
}

// Sink stores rows: a database.
type Sink interface {
	// Write stores rows in one transaction. Writing a row again (a
	// retried batch) is a no-op.
	Write(ctx context.Context, rows []Entry) error
	Close() error
}

// Observer is told what the ledger does, for metrics.
type Observer interface {
	LedgerWritten(rows int)
	LedgerDropped()
	LedgerFailed()
}

// Options tune a ledger.
type Options struct {
	FlushInterval time.Duration
	BatchSize     int
	QueueSize     int
	Log           *slog.Logger
	Observer      Observer
}

// Ledger queues rows and writes them to its sink.
type Ledger struct {
	sink  Sink
	opts  Options
	queue chan Entry
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	// written, when set (tests), is called after each successful write.
	written func(n int)
}

// writeTimeout bounds one batch's write.
const writeTimeout = 10 * time.Second

// New starts a ledger writing to sink.
func New(sink Sink, opts Options) *Ledger {
	l := &Ledger{sink: sink, opts: opts, queue: make(chan Entry, opts.QueueSize), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

// Record queues e. It never blocks: with the queue full, e is dropped and
// counted.
func (l *Ledger) Record(e Entry) {
	select {
	case l.queue <- e:
	default:
		l.opts.Observer.LedgerDropped()
	}
}

// Queued is how many rows wait to be written.
func (l *Ledger) Queued() int { return len(l.queue) }

// run writes batches until Close. While writes fail, it holds its batch
// and takes no more rows: the queue is the buffer, and it is bounded.
func (l *Ledger) run() {
	defer close(l.done)
	tick := time.NewTicker(l.opts.FlushInterval)
	defer tick.Stop()
	batch := make([]Entry, 0, l.opts.BatchSize)
	failing := false
	for {
		queue := l.queue
		if failing || len(batch) >= l.opts.BatchSize {
			queue = nil
		}
		select {
		case e := <-queue:
			batch = append(batch, e)
			if len(batch) < l.opts.BatchSize {
				continue
			}
		case <-tick.C:
		case <-l.stop:
			l.drain(batch)
			return
		}
		if len(batch) == 0 {
			continue
		}
		failing = !l.write(batch)
		if !failing {
			batch = batch[:0]
		}
	}
}

// write writes batch, reporting whether it was stored.
func (l *Ledger) write(batch []Entry) bool {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := l.sink.Write(ctx, batch); err != nil {
		l.opts.Observer.LedgerFailed()
		l.opts.Log.Warn("usage ledger write failed; the rows are kept and retried", "rows", len(batch), "queued", len(l.queue), "error", err)
		return false
	}
	l.opts.Observer.LedgerWritten(len(batch))
	if l.written != nil {
		l.written(len(batch))
	}
	return true
}

// drain writes what is held and queued, at shutdown: one try each batch.
func (l *Ledger) drain(batch []Entry) {
	for {
		for len(batch) < l.opts.BatchSize {
			select {
			case e := <-l.queue:
				batch = append(batch, e)
				continue
			default:
			}
			break
		}
		if len(batch) == 0 {
			return
		}
		if !l.write(batch) {
			l.opts.Log.Error("usage ledger rows lost at shutdown: the database did not take them", "rows", len(batch)+len(l.queue))
			return
		}
		batch = batch[:0]
	}
}

// Close writes what is queued and closes the sink. ctx bounds the wait.
func (l *Ledger) Close(ctx context.Context) error {
	l.once.Do(func() { close(l.stop) })
	select {
	case <-l.done:
	case <-ctx.Done():
		return errors.Join(ctx.Err(), l.sink.Close())
	}
	return l.sink.Close()
}
