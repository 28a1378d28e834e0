// Package resumable makes a stream outlive its connection: the answer is
// generated into an event log (eventlog, in memory and mirrored to Redis)
// by a producer, and any number of readers follow it from any event, on
// any replica sharing Redis. It owns the producer, stream ids and access
// tokens, the last-reader policy, and the readers. The events are a
// dialect's (Lines); the log keeps one JSON line per event.
package resumable

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/relay"
)

// Lines is a dialect's stream as a log keeps it: every frame its Format
// renders is one JSON line per event, beginning {"type":"NAME"; readers
// add the SSE framing and the ids.
type Lines interface {
	relay.Format
	// Terminal reports whether line ends its stream, and how.
	Terminal(line []byte) (outcome.End, bool)
}

// Observer is told what streams do, for metrics.
type Observer interface {
	// Resumed: a reader follows a stream from source (memory, redis).
	Resumed(source string)
	// Cancelled: a stream was cancelled for reason (delete, last_reader).
	Cancelled(reason string)
	// ProducerLost: a stream ended because its producer's replica died.
	ProducerLost()
	// MirrorLag: a batch of a stream's events reached Redis lag after the
	// first of them was relayed, how far the copy that other replicas
	// read trailed the stream.
	MirrorLag(lag time.Duration)
	// MirrorFailed: a write of a stream's events or lease to Redis failed;
	// retried says it goes again (the lease allows), otherwise that
	// stream's mirror has stopped.
	MirrorFailed(retried bool)
}

// Causes of a stream's cancellation, both reported with code cancelled.
var (
	ErrCancelled = failure.Define(failure.StatusClientClosedRequest, failure.TypeInvalidRequest, failure.CodeCancelled, "the stream was cancelled (DELETE /v1/streams/{id})")
	ErrAbandoned = failure.Define(failure.StatusClientClosedRequest, failure.TypeInvalidRequest, failure.CodeCancelled, "the stream was cancelled: its last reader left and none came back")
	// ErrProducerLost ends a stream whose producing replica died.
	ErrProducerLost = failure.Define(http.StatusBadGateway, failure.TypeServer, "producer_lost", "the gateway replica producing this stream stopped; the answer is incomplete")
	// ErrStoreUnavailable: Redis could not be reached.
	ErrStoreUnavailable = failure.Define(http.StatusServiceUnavailable, failure.TypeServer, "stream_store_unavailable", "the stream store (Redis) is unavailable")
)

// Hub holds this process's resumable streams: their logs in memory, their
// producers, and the Redis mirror when streams.backend is redis.
type Hub struct {
	cfg    config.Streams
	log    *slog.Logger
	obs    Observer
	mem    *eventlog.Memory
	rds    *eventlog.Redis       // nil with backend memory
	client redis.UniversalClient // rds's
	// writes are the producers' writes of events to Redis, waiting for
	// one of mirrorWriters.
	writes *writeQueue
	// stopKeeper ends the keeper, which has ended when keeperDone is
	// closed (with backend redis).
	stopKeeper, keeperDone chan struct{}

	secret []byte
	// stopping is done, with failure.ErrShutdown as its cause, when
	// streams in flight must end.
	stopping context.Context
	// retryFrame is the retry: line of every events URL.
	retryFrame []byte

	// wg counts producers, which outlive handlers.
	wg   sync.WaitGroup
	mu   sync.Mutex
	live map[string]*Producer
}

// RedisPool is the Redis connection pool size for streams: every reader
// following a stream from another replica holds a connection while it
// waits for events.
const RedisPool = 512

// HubOptions are what a Hub needs besides its configuration.
type HubOptions struct {
	Log      *slog.Logger
	Observer Observer
	// Redis, when set, mirrors every stream (streams.backend redis). The
	// hub closes it.
	Redis redis.UniversalClient
	// Stopping is cancelled, with failure.ErrShutdown as its cause, when
	// the streams still running must end.
	Stopping context.Context
	// Now is the clock of retention; nil is time.Now.
	Now func() time.Time
}

// NewHub returns the hub of a process.
func NewHub(st config.Streams, opts HubOptions) *Hub {
	h := &Hub{cfg: st, log: opts.Log, obs: opts.Observer, stopping: opts.Stopping, live: map[string]*Producer{}, secret: []byte(st.TokenSecret.Reveal()),
		retryFrame: fmt.Appendf(nil, "retry: %d\n\n", st.ReconnectDelay.Std().Milliseconds())}
	h.mem = eventlog.NewMemory(eventlog.MemoryOptions{
		MaxStreamBytes: st.MaxStreamBytes, MaxStreamEvents: st.MaxStreamEvents,
		MaxTotalBytes: st.MaxTotalBytes, Retention: st.Retention.Std(), Now: opts.Now,
	})
	if len(h.secret) == 0 {
		// Tokens then die with the process, which holds the streams too.
		h.secret = make([]byte, 32)
		_, _ = rand.Read(h.secret)
	}
	if opts.Redis != nil {
		h.client = opts.Redis
		h.writes = newWriteQueue(mirrorWriters)
		h.rds = eventlog.NewRedis(eventlog.RedisOptions{Client: opts.Redis, Lease: st.LeaseTTL.Std(), Retention: st.Retention.Std(), MaxLen: int64(st.MaxStreamEvents)})
		h.stopKeeper, h.keeperDone = make(chan struct{}), make(chan struct{})
		go h.keep()
	}
	return h
}

// keep visits every mirrored stream once per renewal interval (see
// Producer.keep): one goroutine and one timer for the process, where each
// stream had its own (8 KiB of stack and a ticker per open stream), and
// the Redis work it finds goes to the writers with the events.
func (h *Hub) keep() {
	defer close(h.keeperDone)
	every := h.rds.RenewInterval()
	t := time.NewTicker(every)
	defer t.Stop()
	var ps []*Producer
	for {
		select {
		case <-h.stopKeeper:
			return
		case <-t.C:
		}
		h.mu.Lock()
		for _, p := range h.live {
			ps = append(ps, p)
		}
		h.mu.Unlock()
		for _, p := range ps {
			p.keep(every)
		}
		clear(ps)
		ps = ps[:0]
	}
}

// Close waits for the producers (the caller has cancelled them) and drops
// the Redis connection.
func (h *Hub) Close() error {
	h.wg.Wait()
	if h.client != nil {
		close(h.stopKeeper)
		<-h.keeperDone
		h.writes.close()
		return h.client.Close()
	}
	return nil
}

// Wait waits for every producer to end, or for ctx.
func (h *Hub) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Redis is the hub's Redis mirror, for readiness checks; nil without one.
func (h *Hub) Redis() *eventlog.Redis { return h.rds }

// Stats reports the streams and bytes held in memory.
func (h *Hub) Stats() (streams int, bytes int64) { return h.mem.Stats() }

// Memory is the hub's in-memory store, for tests.
func (h *Hub) Memory() *eventlog.Memory { return h.mem }

func (h *Hub) producer(id string) *Producer {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.live[id]
}

// NewID returns "str_" and 128 random bits.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "str_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// ValidID rejects what NewID cannot have made, before it reaches a map or
// a Redis key.
func ValidID(id string) bool {
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

// Token grants access to stream id's events until exp (Unix seconds):
// "EXP.MAC", the MAC an HMAC-SHA256 of the id and exp.
func (h *Hub) Token(id string, exp int64) string {
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

// Verify checks tok for stream id at now.
func (h *Hub) Verify(id, tok string, now time.Time) error {
	e, _, _ := strings.Cut(tok, ".")
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || !hmac.Equal([]byte(h.Token(id, exp)), []byte(tok)) {
		return errBadToken
	}
	if now.Unix() > exp {
		return errTokenExpired
	}
	return nil
}

// EventsURL is where a client follows stream id, with a token good for
// streams.token_ttl, and the token's expiry. It is relative, to be
// resolved against the gateway's address as the client sees it.
func (h *Hub) EventsURL(id string, now time.Time) (string, int64) {
	exp := now.Add(h.cfg.TokenTTL.Std()).Unix()
	return "/v1/streams/" + id + "?token=" + h.Token(id, exp), exp
}
