package resumable

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/internal/offstack"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/relay"
)

// Policy resolves the last-reader policy for a stream of model started
// with key: the key's, else the model's, else the default.
func Policy(cfg *config.Config, model, key string) (string, time.Duration) {
	policy, grace := cfg.Streams.LastReader, cfg.Streams.LastReaderGrace.Std()
	for _, p := range []config.LastReaderPolicy{cfg.Models[model].LastReaderPolicy, cfg.Keys[key].LastReaderPolicy} {
		if p.LastReader != "" {
			policy = p.LastReader
		}
		if p.LastReaderGrace != nil {
			grace = p.LastReaderGrace.Std()
		}
	}
	return policy, grace
}

// Stream is a generation about to start: what the producer runs.
type Stream struct {
	// ID is the stream's (NewID), EventsURL and TokenExp where to follow
	// it (Hub.EventsURL).
	ID        string
	EventsURL string
	TokenExp  int64
	Meta      eventlog.Meta
	// Pump is the upstream stream to relay, in Pump.Format, which must be
	// Lines. Its Observer is set from Observe.
	Pump relay.Pump
	// Observe returns the stream's observer, given a func reporting that
	// nobody reads it.
	Observe func(unattended func() bool) relay.Observer
	// Reserved is the stream's record in Redis, created while the
	// upstream opened (Hub.Reserve); nil has Start create it.
	Reserved *Reservation
	// Provider answered the opening attempt (for the opening event).
	Provider string
	// Ctx is the generation's, Cancel cancels it with a cause, and
	// Release ends the upstream call once the stream is over.
	Ctx     context.Context
	Cancel  context.CancelCauseFunc
	Release func()
	// Policy and Grace are the last-reader policy (Policy).
	Policy string
	Grace  time.Duration
	// Detached is a stream started with POST /v1/streams: nobody reads
	// it yet, and its client means to come back.
	Detached bool
	// Info is the request's record so far. The producer's copy of the
	// Stream holds its own record: OnEnd completes it, and a reader that
	// saw the stream end copies it into its request's (Report).
	Info middleware.Info
	// Redact makes error text safe to log.
	Redact func(string) string
	// OnEnd is called once the terminal event is written, with how the
	// stream ended and the producer's record, before it is reported to
	// readers.
	OnEnd func(o relay.Outcome, info *middleware.Info)
}

// Producer reads one upstream stream into its log, under its own context:
// readers come and go, and the last-reader policy decides when their
// absence cancels the upstream.
type Producer struct {
	h   *Hub
	st  Stream
	f   Lines
	log *eventlog.Log
	// mirrored is set while Redis holds the stream and the lease is ours.
	mirrored atomic.Bool
	// mirroring is the state of its writes to Redis, for a stream kept
	// there too; nil otherwise (some 250 bytes less a stream: issue 18).
	// Everything that reaches it is for a mirrored stream.
	*mirroring
	// remote is how many readers followed the stream from other
	// replicas when last counted.
	remote atomic.Int64
	done   chan struct{}

	// primary, for POST /v1/stream, is the connection that started the
	// stream; next is the id the next event appended will get.
	primary *primary
	next    int64

	// mu guards the last-reader policy's state.
	mu        sync.Mutex
	hadReader bool
	graceT    *time.Timer
	ended     bool
}

// mirroring is a mirrored Producer's state of its writes to Redis.
type mirroring struct {
	// out holds the events appended since the last write to Redis began
	// (mirrored streams only). The writes run one at a time, on the hub's
	// writers and never on the relay's goroutine: a token goes to its
	// client without waiting for Redis, and while Redis is slow the events
	// that queue behind a write go out together in the next one. Writes
	// start at least streams.redis_write_interval apart, so a stream whose
	// tokens come apart costs Redis a write per batch, not per token (the
	// first events after a quiet spell go at once). outMu guards these
	// fields; outIdle is signalled when a write ends; outT queues the next.
	outMu   sync.Mutex
	outIdle sync.Cond
	out     []byte
	spare   []byte // the last batch's buffer, for the next
	// outSince is when the first event in out was appended, for the
	// mirror's lag (one clock read a batch), outFirst its id.
	outSince time.Time
	outFirst int64
	// leaseUntil is when the lease runs out unless renewed, as of the last
	// write that renewed it; retryAt holds the next write back after one
	// failed (writers only, one at a time, and Start).
	leaseUntil, retryAt time.Time
	mstate              mirrorState
	lastOut             time.Time
	outT                *time.Timer
	outDone             bool
	// renewDue and readersDue queue, with the events, the lease's renewal
	// and a count of the readers on other replicas (the hub's keeper and
	// the log's reader changes set them): the writers do both, so that a
	// mirrored stream costs no goroutine of its own (issue 18).
	renewDue, readersDue bool
}

// Start sets up the log and producer of st. A detached stream is
// generated on a goroutine of its own; otherwise the caller becomes the
// stream's primary reader and runs the producer itself (RunPrimary).
func (h *Hub) Start(st Stream) *Producer {
	p := &Producer{h: h, st: st, f: st.Pump.Format.(Lines), next: 1, done: make(chan struct{})}
	if st.Observe != nil {
		p.st.Pump.Observer = st.Observe(p.Unattended)
	}
	var err error
	p.log, err = h.mem.Create(st.ID, st.Meta)
	if err != nil { // 128 random bits do not collide
		panic("stream id " + st.ID + ": " + err.Error())
	}
	if h.rds != nil {
		r := st.Reserved
		if r == nil {
			r = h.Reserve(st.ID, st.Meta)
		}
		<-r.done
		p.mirroring = &mirroring{leaseUntil: r.began.Add(h.rds.LeaseHold())}
		p.outIdle.L = &p.outMu
		if r.err != nil {
			h.log.Warn("stream kept in this replica only: redis unavailable", "stream_id", st.ID, "error", r.err)
		}
		p.mirrored.Store(r.err == nil)
	}
	_ = p.append(p.f.Opened(nil, st.Provider))
	if !st.Detached {
		p.primary = &primary{reader: p.log.Attach(0)}
	}
	h.mu.Lock()
	h.live[st.ID] = p
	h.mu.Unlock()
	// Readers on other replicas are counted in Redis (onReaders), and the
	// hub's keeper renews the lease of a stream that writes nothing.
	p.log.OnReaders(p.onReaders)
	p.applyPolicy(p.log.Readers())
	h.wg.Add(1)
	if st.Detached {
		go p.run()
	}
	return p
}

// Reservation is a stream's record in Redis, being created.
type Reservation struct {
	id    string
	began time.Time
	done  chan struct{}
	err   error // once done is closed
}

// Reserve starts creating stream id's record in Redis, with streams kept
// there (nil otherwise), for a stream about to start: the round trip runs
// while the upstream opens, instead of after it, where it was part of
// every stream's time to first token. The record exists before the
// stream's id reaches anyone, as a reader on another replica needs.
// Start the stream with it (Stream.Reserved), or Drop it.
func (h *Hub) Reserve(id string, meta eventlog.Meta) *Reservation {
	if h.rds == nil {
		return nil
	}
	r := &Reservation{id: id, began: time.Now(), done: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		r.err = h.rds.Create(ownGoroutine, id, meta) // bounded as the mirror's are
		close(r.done)
	}()
	return r
}

// Drop deletes the record of a reserved stream that will not start (its
// upstream failed to open), once created, without waiting for it.
func (h *Hub) Drop(r *Reservation) {
	if r == nil {
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		<-r.done
		if r.err != nil {
			return
		}
		if err := h.rds.Drop(ownGoroutine, r.id); err != nil {
			h.log.Debug("a stream that never started stays in redis until its lease and retention pass", "stream_id", r.id, "error", err)
		}
	}()
}

// Unattended reports that nobody reads the stream, here or elsewhere.
func (p *Producer) Unattended() bool { return p.log.Readers() == 0 && p.remote.Load() == 0 }

// primary is the connection that started a stream with POST /v1/stream.
// The producer runs on its handler's goroutine and writes to it as it
// appends to the log: no second goroutine, no hand-over per event. If it
// leaves, the producer goes on (or not) by the last-reader policy.
type primary struct {
	out    *relay.SSE
	reader *eventlog.Reader
	named  bool
	gone   atomic.Bool
}

// RunPrimary sends the events appended so far to out, then runs the
// producer on this goroutine until the stream ends. It reports whether
// the primary connection was still there at the end.
func (p *Producer) RunPrimary(ctx context.Context, out *relay.SSE, named bool) bool {
	pr := p.primary
	pr.out, pr.named = out, named
	defer pr.reader.Detach()
	// A client that leaves while the upstream is silent is noticed here.
	defer context.AfterFunc(ctx, p.primaryLeft)()
	ev, _, _, _ := p.log.Read(0)
	var lines []byte
	ev.Each(func(_ int64, line []byte) { lines = append(append(lines, line...), '\n') })
	p.toPrimary(ev.First, lines)
	p.run()
	return !pr.gone.Load()
}

// toPrimary writes events first, first+1, ... (lines) to the primary
// connection, if it is still there.
func (p *Producer) toPrimary(first int64, lines []byte) {
	pr := p.primary
	if pr == nil || pr.out == nil || pr.gone.Load() || len(lines) == 0 {
		return
	}
	// A pooled buffer for the framing, given back at once: a stream
	// waiting for its next token holds none (see relay.Buffer).
	bp := relay.Buffer()
	buf, id := (*bp)[:0], first
	for rest := lines; len(rest) > 0; id++ {
		i := bytes.IndexByte(rest, '\n')
		buf = appendEvent(buf, id, rest[:i], pr.named)
		rest = rest[i+1:]
	}
	err := pr.out.Write(buf)
	*bp = buf
	relay.Release(bp)
	if err != nil {
		p.primaryLeft()
		return
	}
	pr.reader.Advance(id - 1)
}

// primaryLeft detaches the primary connection, once.
func (p *Producer) primaryLeft() {
	if p.primary.gone.CompareAndSwap(false, true) {
		p.primary.reader.Detach()
		p.h.log.Debug("client left the stream", "stream_id", p.st.ID, "request_id", p.st.Info.RequestID, "last_reader", p.st.Policy)
	}
}

// append adds events to the log and queues them for its mirror
// (toMirror). It waits while readers lagging behind hold the log at its
// bound.
func (p *Producer) append(lines []byte) error {
	first := p.next
	p.next += int64(bytes.Count(lines, []byte{'\n'}))
	p.log.Append(lines)
	p.toPrimary(first, lines)
	p.log.WaitRoom(p.st.Ctx.Done())
	if p.mirrored.Load() {
		p.toMirror(first, lines)
	}
	return nil
}

// mirrorState is where a producer's next write to Redis stands.
type mirrorState uint8

const (
	mirrorIdle    mirrorState = iota
	mirrorQueued              // in the hub's write queue
	mirrorWriting             // a writer is writing its batch
)

// toMirror queues lines, from event first on, for Redis.
func (p *Producer) toMirror(first int64, lines []byte) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if len(p.out) == 0 {
		p.outSince, p.outFirst = time.Now(), first
	}
	p.out = append(p.out, lines...)
	p.scheduleMirror()
}

// scheduleMirror queues the next write of what waits, unless one is
// queued or running: a renewal or a count of readers at once, events now
// or (outT) streams.redis_write_interval after the last write began;
// outMu is held.
func (p *Producer) scheduleMirror() {
	if p.mstate != mirrorIdle || p.outDone || !p.mirrored.Load() {
		return
	}
	if wait := time.Until(p.retryAt); wait > 0 {
		if p.outT == nil && (len(p.out) > 0 || p.renewDue || p.readersDue) {
			p.outT = time.AfterFunc(wait, p.mirrorDue)
		}
		return
	}
	if !p.renewDue && !p.readersDue {
		if p.outT != nil || len(p.out) == 0 {
			return
		}
		if wait := p.h.cfg.RedisWriteInterval.Std() - time.Since(p.lastOut); wait > 0 {
			p.outT = time.AfterFunc(wait, p.mirrorDue)
			return
		}
	}
	p.mstate = mirrorQueued
	p.h.writes.push(p)
}

// mirrorDue schedules again once outT has waited: lastOut has not moved
// meanwhile (no write of events runs while outT is set), so the write is
// queued now.
func (p *Producer) mirrorDue() {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.outT = nil
	p.scheduleMirror()
}

// writeMirror appends the events waiting to Redis, or renews the lease
// when none wait, and counts the readers on other replicas if asked, on
// one of the hub's writers. A mirror that says the stream is over was
// told so by another replica (a DELETE there): the upstream is cancelled.
func (p *Producer) writeMirror() {
	p.outMu.Lock()
	if p.mstate != mirrorQueued { // finishMirror took over
		p.outMu.Unlock()
		return
	}
	renew, readers := p.renewDue, p.readersDue
	p.renewDue, p.readersDue = false, false
	var (
		lines []byte
		since time.Time
		first int64
	)
	// Events go now (with what came while queued) unless queued only for
	// the lease or the readers within the write interval: then they keep
	// waiting for it.
	if len(p.out) > 0 && time.Since(p.lastOut) >= p.h.cfg.RedisWriteInterval.Std() {
		lines, since, first = p.out, p.outSince, p.outFirst
		p.out, p.spare = p.spare[:0], nil
		p.lastOut = time.Now()
	}
	p.mstate = mirrorWriting
	p.outMu.Unlock()

	var (
		live    = true
		retried bool
		err     error
	)
	switch {
	case len(lines) > 0: // renews the lease too
		live, retried, err = p.writeBatch(ownGoroutine, since, true, func(ctx context.Context) (bool, error) { return p.h.rds.Append(ctx, p.st.ID, first, lines) })
	case renew:
		live, retried, err = p.mirror(ownGoroutine, true, func(ctx context.Context) (bool, error) { return p.h.rds.Renew(ctx, p.st.ID) })
	}
	switch {
	case retried: // after a pause, with what comes meanwhile
	case err != nil:
		// The mirror has stopped: this replica's readers are all there
		// is now. (Not in mirror, which also writes the terminal event
		// of a stream that has ended.)
		p.applyPolicy(p.log.Readers())
	case !live:
		p.st.Cancel(ErrCancelled)
	case readers:
		p.applyPolicy(p.readers())
	}

	p.outMu.Lock()
	defer p.outMu.Unlock()
	switch {
	case retried:
		if lines != nil { // ahead of what came since
			p.out = append(lines, p.out...)
			p.outSince, p.outFirst = since, first
		}
		p.renewDue = p.renewDue || renew
		p.readersDue = p.readersDue || readers
		p.retryAt = time.Now().Add(mirrorRetryPause)
	case lines != nil:
		p.spare = lines[:0]
	}
	p.mstate = mirrorIdle
	p.outIdle.Broadcast()
	p.scheduleMirror()
}

// finishMirror waits for the write in flight, then writes the events
// still waiting and last, the terminal event, to Redis, and stops the
// flushing.
func (p *Producer) finishMirror(last []byte) {
	p.outMu.Lock()
	p.outDone = true
	if p.outT != nil {
		p.outT.Stop() // one that has fired sees outDone
		p.outT = nil
	}
	if p.mstate == mirrorQueued {
		p.mstate = mirrorIdle // its writer will pass; the batch goes here
	}
	for p.mstate == mirrorWriting {
		p.outIdle.Wait()
	}
	since, first := p.outSince, p.outFirst
	if len(p.out) == 0 {
		// The batch is the terminal event alone, the next event's.
		since, first = time.Now(), p.next
	}
	lines := append(p.out, last...)
	p.out, p.spare = nil, nil
	p.outMu.Unlock()
	if p.mirrored.Load() {
		// On the producer's goroutine, which may be a handler's: the
		// command hops off it (see offstack).
		_, _, _ = p.writeBatch(context.Background(), since, false, func(ctx context.Context) (bool, error) { return p.h.rds.Finish(ctx, p.st.ID, first, lines, false) })
	}
}

// writeBatch writes a batch of events whose first was appended at since,
// and records the mirror's lag when it was written.
func (p *Producer) writeBatch(base context.Context, since time.Time, mayRetry bool, op func(context.Context) (bool, error)) (live, retried bool, err error) {
	live, retried, err = p.mirror(base, mayRetry, op)
	if err == nil {
		p.h.obs.MirrorLag(time.Since(since))
	}
	return live, retried, err
}

// ownGoroutine is the context of Redis commands sent from the hub's own
// goroutines (the mirror's writers, reservations): they need no hop off
// a handler's stack.
var ownGoroutine = offstack.Here(context.Background())

// mirrorTimeout is the longest one Redis operation of a stream's mirror
// takes, and mirrorRetryPause the least time before a failed one goes
// again. The Redis client's socket timeouts are what bound an operation
// (1 s, gateway/redis.go): go-redis applies no context deadline to a
// command unless told to (ContextTimeoutEnabled, off), and runs an
// autopipelined one under its batch's own context. The hub's commands
// therefore go under ownGoroutine itself: a deadline of their own bounded
// nothing, and cost a timer and a context every write (issue 18).
const (
	mirrorTimeout    = time.Second
	mirrorRetryPause = 100 * time.Millisecond
)

// mirror runs one Redis operation for the stream, under base. A failed
// one that may be retried (mayRetry: it can be repeated, as appends that
// name their first event can) is, while the lease would still hold when the retry's own
// time runs out: Redis slow or away for a second or two costs the mirror
// a delay, not the stream. Any other failure stops the mirroring for
// good: the stream goes on here, and readers elsewhere see producer_lost
// once the lease runs out, rather than a log with holes.
func (p *Producer) mirror(base context.Context, mayRetry bool, op func(context.Context) (bool, error)) (live, retried bool, err error) {
	began := time.Now()
	live, err = op(base)
	switch {
	case err == nil && live:
		p.leaseUntil = began.Add(p.h.rds.LeaseHold())
	case err != nil && mayRetry && !errors.Is(err, eventlog.ErrOutOfStep) && time.Now().Add(mirrorTimeout+mirrorRetryPause).Before(p.leaseUntil):
		p.h.obs.MirrorFailed(true)
		p.h.log.Debug("redis write of a stream failed; retrying within its lease", "stream_id", p.st.ID, "error", err)
		return live, true, err
	default:
		if p.mirrored.Swap(false) && err != nil {
			p.h.obs.MirrorFailed(false)
			p.h.log.Warn("stream no longer mirrored to redis", "stream_id", p.st.ID, "error", err)
		}
	}
	return live, false, err
}

func (p *Producer) run() {
	defer p.h.wg.Done()
	bp, res, err := p.st.Pump.Run(p.append)
	p.end(bp, res, err)
}

// end concludes the stream after Run. A method of its own so that run's
// frame stays small: a primary reader's handler relays under it for the
// whole stream (see package offstack).
func (p *Producer) end(bp *[]byte, res *relay.Result, err error) {
	h := p.h
	o := relay.Conclude(p.st.Ctx, *res, err, p.st.Redact)
	if errors.Is(context.Cause(p.st.Ctx), ErrAbandoned) {
		o.End = outcome.ClientGone // and nobody came back
		h.obs.Cancelled("last_reader")
	}
	if bp == nil {
		bp = relay.Buffer()
	}
	buf := o.Terminal(*bp, p.f)
	p.st.Pump.Stream.Close()
	// buf holds the deltas not yet flushed, then the terminal event.
	p.log.Finish(buf)
	p.toPrimary(p.next, buf)
	if h.rds != nil {
		p.finishMirror(buf)
	}
	*bp = buf
	relay.Release(bp)
	p.st.Release()
	p.mu.Lock()
	p.ended = true
	if p.graceT != nil {
		p.graceT.Stop()
	}
	p.mu.Unlock()
	// The log outlives the producer by its retention: it must not keep
	// the producer (and the upstream's buffers) alive.
	p.log.OnReaders(nil)
	h.mu.Lock()
	delete(h.live, p.st.ID)
	h.mu.Unlock()
	p.st.OnEnd(o, &p.st.Info)
	close(p.done)
	level := slog.LevelDebug
	if p.log.Readers() == 0 {
		level = slog.LevelInfo // no reader's access log will tell
	}
	if !h.log.Enabled(context.Background(), level) {
		return
	}
	h.log.Log(context.Background(), level, "stream finished", "stream_id", p.st.ID, "request_id", p.st.Info.RequestID,
		"model", p.st.Meta.Model, "provider", p.st.Info.Provider, "end", p.st.Info.End.String(), "error_code", p.st.Info.ErrorCode,
		"prompt_tokens", p.st.Info.PromptTokens, "completion_tokens", p.st.Info.CompletionTokens,
		"duration_ms", time.Since(p.st.Pump.Start).Milliseconds())
}

// Report copies the producer's outcome into a reader's access-log record,
// once that reader has seen the terminal event (so the producer has
// written it all).
func (p *Producer) Report(info *middleware.Info) {
	requestID := info.RequestID
	*info = p.st.Info
	info.RequestID = requestID
}

// applyPolicy applies the last-reader policy to n readers attached.
func (p *Producer) applyPolicy(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.ended:
	case n > 0:
		p.hadReader = true
		if p.graceT != nil {
			p.graceT.Stop()
			p.graceT = nil
		}
	case p.st.Policy == config.LastReaderDrain:
	case p.st.Policy == config.LastReaderCancel && p.hadReader && !p.st.Detached:
		p.st.Cancel(ErrAbandoned)
	case p.graceT == nil:
		// continue, a stream nobody has read yet, or one started with
		// POST /v1/streams, whose client means to resume (cancel is for
		// clients that never do): wait for a reader.
		p.graceT = time.AfterFunc(p.st.Grace, func() {
			n := p.readers()
			p.mu.Lock()
			p.graceT = nil
			p.mu.Unlock()
			if n == 0 {
				p.st.Cancel(ErrAbandoned)
			}
		})
	}
}

// onReaders applies the last-reader policy when the readers here
// change: at once when some are, or when the stream is not mirrored;
// otherwise once the readers on other replicas are counted, which asks
// Redis and so is left to a writer.
func (p *Producer) onReaders(n int) {
	if n > 0 || !p.mirrored.Load() {
		p.applyPolicy(n)
		return
	}
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.readersDue = true
	p.scheduleMirror()
}

// keep is the hub keeper's visit of a mirrored stream, every renewal
// interval: a lease that no write of events renewed within the interval
// is renewed,
// and with nobody reading here the readers elsewhere are counted for the
// last-reader policy (a reader that left another replica is not told
// here).
func (p *Producer) keep(every time.Duration) {
	if !p.mirrored.Load() {
		return
	}
	none := p.log.Readers() == 0
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.renewDue = p.renewDue || p.lastOut.IsZero() || time.Since(p.lastOut) >= every
	p.readersDue = p.readersDue || none
	p.scheduleMirror()
}

// readers counts the readers here and, when none are, those following
// the stream from other replicas.
func (p *Producer) readers() int {
	n := p.log.Readers()
	if n == 0 && p.mirrored.Load() {
		// From a writer, or the grace timer's goroutine.
		n, _ = p.h.rds.Readers(ownGoroutine, p.st.ID)
		p.remote.Store(int64(n))
	}
	return n
}

// stop cancels the generation with cause, and waits until the producer has
// written its terminal event. It reports false if the stream had ended.
func (p *Producer) stop(cause error) bool {
	if _, finished := p.log.Last(); finished {
		return false
	}
	p.st.Cancel(cause)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	return true
}
