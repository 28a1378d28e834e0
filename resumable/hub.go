package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
)

// streamHub holds this process's resumable streams: their logs in memory,
// their producers, and the Redis mirror when streams.backend is redis.
type streamHub struct {
	cfg    config.Streams
	mem    *eventlog.Memory
	rds    *eventlog.Redis // nil with backend memory
	client *redis.Client   // rds's
	secret []byte

	// wg counts producers and their watchers, which outlive handlers.
	wg   sync.WaitGroup
	mu   sync.Mutex
	live map[string]*producer
}

// streamsRedisPool is the Redis connection pool size for streams: every
// reader following a stream from another replica holds a connection while
// it waits for events.
const streamsRedisPool = 512

func newStreamHub(cfg *config.Config, log *slog.Logger) (*streamHub, error) {
	st := cfg.Streams
	h := &streamHub{cfg: st, live: map[string]*producer{}, secret: []byte(st.TokenSecret.Reveal())}
	h.mem = eventlog.NewMemory(eventlog.MemoryOptions{
		MaxStreamBytes: st.MaxStreamBytes, MaxStreamEvents: st.MaxStreamEvents,
		MaxTotalBytes: st.MaxTotalBytes, Retention: st.Retention.Std(),
	})
	if len(h.secret) == 0 {
		// Tokens then die with the process, which holds the streams too.
		h.secret = make([]byte, 32)
		_, _ = rand.Read(h.secret)
	}
	if st.Backend == "redis" {
		c, err := newRedisClient(st.RedisConfig(cfg.RateLimit), log, streamsRedisPool)
		if err != nil {
			return nil, fmt.Errorf("streams: %w", err)
		}
		h.client = c
		h.rds = eventlog.NewRedis(eventlog.RedisOptions{Client: c, Lease: st.LeaseTTL.Std(), Retention: st.Retention.Std(), MaxLen: int64(st.MaxStreamEvents)})
	}
	return h, nil
}

// close waits for the producers (the caller has cancelled them) and drops
// the Redis connection.
func (h *streamHub) close() error {
	h.wg.Wait()
	if h.client != nil {
		return h.client.Close()
	}
	return nil
}

// wait waits for every producer to end, or for ctx.
func (h *streamHub) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *streamHub) producer(id string) *producer {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live[id]
}

// newStreamID returns "str_" and 128 random bits.
func newStreamID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "str_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// validStreamID rejects what newStreamID cannot have made, before it
// reaches a map or a Redis key.
func validStreamID(id string) bool {
	rest, ok := strings.CutPrefix(id, "str_")
	if !ok || len(rest) != 22 {
		return false
	}
	for _, c := range []byte(rest) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// token grants access to stream id's events until exp (Unix seconds):
// "EXP.MAC", the MAC an HMAC-SHA256 of the id and exp.
func (h *streamHub) token(id string, exp int64) string {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write(strconv.AppendInt(nil, exp, 10))
	return strconv.FormatInt(exp, 10) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

var (
	errBadToken     = errors.New("the token is not valid for this stream")
	errTokenExpired = errors.New("the token has expired: start a new stream, or read it with the API key that created it")
)

func (h *streamHub) verify(id, tok string, now time.Time) error {
	e, _, _ := strings.Cut(tok, ".")
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || !hmac.Equal([]byte(h.token(id, exp)), []byte(tok)) {
		return errBadToken
	}
	if now.Unix() > exp {
		return errTokenExpired
	}
	return nil
}

// eventsURL is where a client follows stream id, with a token good for
// streams.token_ttl. It is relative, to be resolved against the gateway's
// address as the client sees it.
func (h *streamHub) eventsURL(id string, now time.Time) (string, int64) {
	exp := now.Add(h.cfg.TokenTTL.Std()).Unix()
	return "/v1/streams/" + id + "?token=" + h.token(id, exp), exp
}

// lastReaderPolicy resolves the policy for a stream of model started with
// key: the key's, else the model's, else the default.
func (s *Server) lastReaderPolicy(model, key string) (string, time.Duration) {
	policy, grace := s.cfg.Streams.LastReader, s.cfg.Streams.LastReaderGrace.Std()
	for _, p := range []config.LastReaderPolicy{s.cfg.Models[model].LastReaderPolicy, s.cfg.Keys[key].LastReaderPolicy} {
		if p.LastReader != "" {
			policy = p.LastReader
		}
		if p.LastReaderGrace != nil {
			grace = p.LastReaderGrace.Std()
		}
	}
	return policy, grace
}

// producer reads one upstream stream into its log. It runs on its own
// goroutine, under its own context: readers come and go, and the
// last-reader policy decides when their absence cancels the upstream.
type producer struct {
	s      *Server
	id     string
	log    *eventlog.Log
	ctx    context.Context
	cancel context.CancelCauseFunc
	// release ends the upstream call's context once the stream is over.
	release func()
	st      *resilientStream
	// eventsURL is where to follow the stream, with a token good until
	// tokenExp.
	eventsURL string
	tokenExp  int64
	f         *nativeFormat
	req       *providers.Request
	adm       *admission
	start     time.Time
	policy    string
	grace     time.Duration
	// info is the producer's own record; a reader that saw the stream
	// end copies it into its request's (report).
	info middleware.Info
	// mirrored is set while Redis holds the stream and the lease is ours.
	mirrored atomic.Bool
	// remote is how many readers followed the stream from other
	// replicas when last counted.
	remote atomic.Int64
	// readersChanged wakes the Redis watcher (mirrored streams only).
	readersChanged chan struct{}
	done           chan struct{}

	// detached is a stream started with POST /v1/streams.
	detached bool
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

// startStream opens the upstream of an admitted request and sets up its
// producer and log. A detached stream (POST /v1/streams) is generated on
// a goroutine of its own; otherwise the caller becomes the stream's
// primary reader and runs the producer itself (runPrimary). When it fails
// it has answered the client and settled the admission.
func (s *Server) startStream(c *gin.Context, routes []deployment, req *providers.Request, adm *admission, model string, start time.Time, detached bool) (p *producer, ok bool) {
	h, info := s.streams, middleware.Get(c)
	p = &producer{s: s, id: newStreamID(), req: req, adm: adm, start: start, info: *info, detached: detached, next: 1,
		readersChanged: make(chan struct{}, 1), done: make(chan struct{})}
	p.policy, p.grace = s.lastReaderPolicy(model, info.KeyName)
	// The generation does not depend on this connection: the policy
	// decides when readers' absence cancels it.
	call, st, e := s.open(c, context.Background(), routes, req, &p.info)
	info.Provider, info.Attempts, info.Fallbacks = p.info.Provider, p.info.Attempts, p.info.Fallbacks
	if e != nil {
		adm.settle(info, false)
		s.fail(c, e)
		return nil, false
	}
	p.ctx, p.cancel, p.release, p.st = call.ctx, call.cancel, call.done, st
	meta := eventlog.Meta{Key: info.KeyName, Model: model}
	var err error
	p.log, err = h.mem.Create(p.id, meta)
	if err != nil { // 128 random bits do not collide
		panic(fmt.Sprintf("stream id %s: %v", p.id, err))
	}
	p.eventsURL, p.tokenExp = h.eventsURL(p.id, time.Now())
	p.f = &nativeFormat{requestID: info.RequestID, model: model, streamID: p.id, resumeURL: p.eventsURL}
	if h.rds != nil {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		err := h.rds.Create(rctx, p.id, meta)
		rcancel()
		if err != nil {
			s.log.Warn("stream kept in this replica only: redis unavailable", "stream_id", p.id, "error", err)
		}
		p.mirrored.Store(err == nil)
	}
	_ = p.append(p.f.opened(nil, p.info.Provider))
	if !detached {
		p.primary = &primary{reader: p.log.Attach(0)}
	}
	h.mu.Lock()
	h.live[p.id] = p
	h.mu.Unlock()
	if p.mirrored.Load() {
		// Readers on other replicas are counted in Redis, and the lease
		// needs renewing: a watcher polls.
		p.log.OnReaders(func(int) {
			select {
			case p.readersChanged <- struct{}{}:
			default:
			}
		})
		h.wg.Add(1)
		go p.watch()
	} else {
		p.log.OnReaders(p.applyPolicy)
	}
	p.applyPolicy(p.log.Readers())
	h.wg.Add(1)
	if detached {
		go p.run()
	}
	return p, true
}

// primary is the connection that started a stream with POST /v1/stream.
// The producer runs on its handler's goroutine and writes to it as it
// appends to the log: no second goroutine, no hand-over per event. If it
// leaves, the producer goes on (or not) by the last-reader policy.
type primary struct {
	out    *sseWriter
	reader *eventlog.Reader
	named  bool
	gone   atomic.Bool
	buf    []byte // framing; the producer's goroutine only
}

// runPrimary sends the events appended so far to out, then runs the
// producer on this goroutine until the stream ends. It reports whether
// the primary connection was still there at the end.
func (p *producer) runPrimary(ctx context.Context, out *sseWriter, named bool) bool {
	pr := p.primary
	pr.out, pr.named = out, named
	bp := bufPool.Get().(*[]byte)
	pr.buf = (*bp)[:0]
	defer func() { *bp = pr.buf[:0]; bufPool.Put(bp) }()
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
func (p *producer) toPrimary(first int64, lines []byte) {
	pr := p.primary
	if pr == nil || pr.out == nil || pr.gone.Load() || len(lines) == 0 {
		return
	}
	buf, id := pr.buf[:0], first
	for rest := lines; len(rest) > 0; id++ {
		i := bytes.IndexByte(rest, '\n')
		buf = appendEvent(buf, id, rest[:i], pr.named)
		rest = rest[i+1:]
	}
	pr.buf = buf
	if pr.out.write(buf) != nil {
		p.primaryLeft()
		return
	}
	pr.reader.Advance(id - 1)
}

// primaryLeft detaches the primary connection, once.
func (p *producer) primaryLeft() {
	if p.primary.gone.CompareAndSwap(false, true) {
		p.primary.reader.Detach()
		p.s.log.Debug("client left the stream", "stream_id", p.id, "request_id", p.info.RequestID, "last_reader", p.policy)
	}
}

// append adds events to the log and its mirror. A mirror that says the
// stream is over was told so by another replica (a DELETE there): the
// upstream is cancelled. It waits while readers lagging behind hold the
// log at its bound.
func (p *producer) append(lines []byte) error {
	first := p.next
	p.next += int64(bytes.Count(lines, []byte{'\n'}))
	p.log.Append(lines)
	p.toPrimary(first, lines)
	p.log.WaitRoom(p.ctx.Done())
	if p.mirrored.Load() {
		live, err := p.mirror(func(ctx context.Context) (bool, error) { return p.s.streams.rds.Append(ctx, p.id, lines) })
		if err == nil && !live {
			p.cancel(errStreamCancelled)
		}
	}
	return nil
}

// mirror runs one Redis operation for the stream. A failure stops the
// mirroring for good: the stream goes on here, and readers elsewhere see
// producer_lost once the lease runs out, rather than a log with holes.
func (p *producer) mirror(op func(context.Context) (bool, error)) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	live, err := op(ctx)
	if err != nil || !live {
		if p.mirrored.Swap(false) && err != nil {
			p.s.log.Warn("stream no longer mirrored to redis", "stream_id", p.id, "error", err)
		}
	}
	return live, err
}

func (p *producer) run() {
	h := p.s.streams
	defer h.wg.Done()
	bp := bufPool.Get().(*[]byte)
	g := p.s.metrics.inFlight.WithLabelValues(endpointNative)
	g.Inc()
	obs := &streamObs{m: p.s.metrics, unattended: func() bool { return p.log.Readers() == 0 && p.remote.Load() == 0 }}
	buf, res, err := pump(p.st, p.f, p.req, &p.info, p.start, (*bp)[:0], p.append, obs)
	buf, _ = p.s.ending(p.ctx, buf, p.f, &res, err, &p.info)
	p.st.Close()
	if errors.Is(context.Cause(p.ctx), errAbandoned) {
		p.s.metrics.streamsCancelled.WithLabelValues("last_reader").Inc()
	}
	// buf holds the deltas not yet flushed, then the terminal event.
	p.log.Finish(buf)
	p.toPrimary(p.next, buf)
	if p.mirrored.Load() {
		_, _ = p.mirror(func(ctx context.Context) (bool, error) { return h.rds.Finish(ctx, p.id, buf, false) })
	}
	*bp = buf[:0]
	bufPool.Put(bp)
	p.release()
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
	delete(h.live, p.id)
	h.mu.Unlock()
	close(p.done)
	g.Dec()
	p.s.metrics.streamEnded(endpointNative, &p.info, time.Since(p.start))
	p.adm.settle(&p.info, true)
	level := slog.LevelDebug
	if p.log.Readers() == 0 {
		level = slog.LevelInfo // no reader's access log will tell
	}
	if !p.s.log.Enabled(context.Background(), level) {
		return
	}
	p.s.log.Log(context.Background(), level, "stream finished", "stream_id", p.id, "request_id", p.info.RequestID,
		"model", p.f.model, "provider", p.info.Provider, "end", p.info.End, "error_code", p.info.ErrorCode,
		"prompt_tokens", p.info.PromptTokens, "completion_tokens", p.info.CompletionTokens,
		"duration_ms", time.Since(p.start).Milliseconds())
}

// report copies the producer's outcome into a reader's access-log record,
// once that reader has seen the terminal event (so the producer has
// written it all).
func (p *producer) report(info *middleware.Info) {
	requestID := info.RequestID
	*info = p.info
	info.RequestID = requestID
}

// applyPolicy applies the last-reader policy to n readers attached.
func (p *producer) applyPolicy(n int) {
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
	case p.policy == config.LastReaderDrain:
	case p.policy == config.LastReaderCancel && p.hadReader && !p.detached:
		p.cancel(errAbandoned)
	case p.graceT == nil:
		// continue, a stream nobody has read yet, or one started with
		// POST /v1/streams, whose client means to resume (cancel is for
		// clients that never do): wait for a reader.
		p.graceT = time.AfterFunc(p.grace, func() {
			n := p.readers()
			p.mu.Lock()
			p.graceT = nil
			p.mu.Unlock()
			if n == 0 {
				p.cancel(errAbandoned)
			}
		})
	}
}

// watch renews the Redis lease of a mirrored stream, and applies the
// last-reader policy counting readers on every replica.
func (p *producer) watch() {
	h := p.s.streams
	defer h.wg.Done()
	t := time.NewTicker(h.rds.RenewInterval())
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-p.readersChanged:
		case <-t.C:
			live, err := p.mirror(func(ctx context.Context) (bool, error) { return h.rds.Renew(ctx, p.id) })
			if err == nil && !live {
				p.cancel(errStreamCancelled)
				return
			}
			if !p.mirrored.Load() {
				// Redis failed: this replica's readers are all
				// there is.
				p.log.OnReaders(p.applyPolicy)
				p.applyPolicy(p.log.Readers())
				return
			}
		}
		p.applyPolicy(p.readers())
	}
}

// readers counts the readers here and, when none are, those following
// the stream from other replicas.
func (p *producer) readers() int {
	n := p.log.Readers()
	if n == 0 && p.mirrored.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, _ = p.s.streams.rds.Readers(ctx, p.id)
		p.remote.Store(int64(n))
	}
	return n
}

// stop cancels the generation with cause, and waits until the producer has
// written its terminal event. It reports false if the stream had ended.
func (p *producer) stop(cause error) bool {
	if _, finished := p.log.Last(); finished {
		return false
	}
	p.cancel(cause)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	return true
}
