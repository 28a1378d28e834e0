package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis mirrors logs into Redis Streams, so that a reader on any replica
// can follow a stream produced on another.
//
// A stream id has three keys, all in one hash slot: a hash with its meta
// and state, the Redis Stream of its events (entry ids "N-0" for event N,
// so a resume is an XREAD after "N-0"), and a sorted set of the readers
// attached on any replica. While the stream is live its producer holds a
// lease, which it renews; a reader that finds the lease run out appends
// the terminal event itself (producer_lost). Every time is Redis's TIME, so
// replicas' clocks do not matter.
type Redis struct {
	c         redis.UniversalClient
	lease     time.Duration
	retention time.Duration
	maxLen    int64
	// appendArgs are appendScript's first arguments, the same for every
	// write: converted to interfaces once, not for each command.
	appendArgs [3]any
}

// RedisOptions configure a Redis mirror.
type RedisOptions struct {
	Client redis.UniversalClient
	// Lease bounds how long readers wait on a producer that died.
	Lease time.Duration
	// Retention is how long a finished stream stays readable.
	Retention time.Duration
	// MaxLen caps each stream's events (XADD MAXLEN: the oldest go).
	MaxLen int64
}

// NewRedis returns a mirror using o.Client, which it does not close.
func NewRedis(o RedisOptions) *Redis {
	r := &Redis{c: o.Client, lease: o.Lease, retention: o.Retention, maxLen: o.MaxLen}
	r.appendArgs = [3]any{r.holdFor().Milliseconds(), r.retention.Milliseconds(), r.maxLen}
	return r
}

// Readers learn that a producer died within the lease: the producer's
// claim runs three quarters of it, renewed every quarter (by the renewal
// ticker, and by every append); readers waiting for events check the claim
// every eighth.

// holdFor is how long one renewal holds the claim.
func (r *Redis) holdFor() time.Duration { return r.lease * 3 / 4 }

// LeaseHold is how long a write that renews the lease holds it, from
// when the write began.
func (r *Redis) LeaseHold() time.Duration { return r.holdFor() }

// RenewInterval is how often a producer must renew its lease.
func (r *Redis) RenewInterval() time.Duration { return r.lease / 4 }

// PollInterval is how long a reader waits for events before it checks
// that the producer is still alive.
func (r *Redis) PollInterval() time.Duration { return r.lease / 8 }

// keys are stream id's keys in Redis: its record, its events and its
// readers. The three are slices of one string, two allocations a command
// rather than four (a stream's mirror sends one a write).
func keys(id string) []string {
	const prefix, events = "sg:stream:{", "}:events"
	s := prefix + id + events + prefix + id + "}:readers"
	record, ev := len(prefix)+len(id)+1, len(prefix)+len(id)+len(events)
	return []string{s[:record], s[:ev], s[ev:]}
}

// nowMS is the Lua prelude that reads Redis's clock in milliseconds.
const nowMS = `local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
`

// createScript: ARGV key, model, lease ms, retention ms.
var createScript = redis.NewScript(nowMS + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'key', ARGV[1], 'model', ARGV[2], 'state', 'live', 'last', 0, 'lease', now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1`)

// appendScript: ARGV lease ms, retention ms, max events, finish ("1": the
// events end the stream), if_lost ("1": only when the lease ran out), the
// number of events, their lines joined by '\n', and the id of the first
// (0: whatever follows the last). With a first id the write is safe to
// repeat: the events Redis already has (a write whose reply was lost,
// retried with what came since) are not added again, and events that
// would leave a hole are refused (-2). The events of one
// call are one entry of the Redis Stream, whose id is that of its last
// event: a write costs one XADD however many tokens it carries. Entries
// whose events are all older than the last max events are trimmed
// (MINID). Returns 1, or 0 if the stream is not live (finished, or
// unknown); with if_lost, -1 while the lease holds.
var appendScript = redis.NewScript(nowMS + `
if redis.call('HGET', KEYS[1], 'state') ~= 'live' then return 0 end
if ARGV[5] == '1' and tonumber(redis.call('HGET', KEYS[1], 'lease')) > now then return -1 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
local n = tonumber(ARGV[6])
local first = tonumber(ARGV[8] or '0')
local data = ARGV[7]
if first > 0 and n > 0 then
  if last < first - 1 then return -2 end
  local skip = math.min(last - first + 1, n)
  if skip == n then
    n = 0
  elseif skip > 0 then
    local pos = 0
    for i = 1, skip do pos = string.find(data, '\n', pos + 1, true) end
    data = string.sub(data, pos + 1)
    n = n - skip
  end
end
if n > 0 then
  last = last + n
  redis.call('XADD', KEYS[2], 'MINID', math.max(last - tonumber(ARGV[3]) + 1, 0) .. '-0', last .. '-0', 'd', data)
end
local ttl = tonumber(ARGV[1]) + tonumber(ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'finished', 'last', last)
  ttl = tonumber(ARGV[2])
elseif ARGV[5] ~= '1' then
  redis.call('HSET', KEYS[1], 'last', last, 'lease', now + tonumber(ARGV[1]))
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1`)

// Create registers a live stream, with this process as its producer.
func (r *Redis) Create(ctx context.Context, id string, meta Meta) error {
	ok, err := createScript.Run(ctx, r.c, keys(id)[:1], meta.Key, meta.Model, r.holdFor().Milliseconds(), r.retention.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("redis create stream: %w", err)
	}
	if ok == 0 {
		return ErrExists
	}
	return nil
}

// dropScript deletes a stream that never got an event: one created for
// a request whose upstream then failed to open, so nobody knows its id.
var dropScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'last') == '0' then return redis.call('DEL', KEYS[1]) end
return 0`)

// Drop deletes stream id if it has no events (see Create); a stream that
// has some is left alone.
func (r *Redis) Drop(ctx context.Context, id string) error {
	if err := dropScript.Run(ctx, r.c, keys(id)[:1]).Err(); err != nil {
		return fmt.Errorf("redis drop stream: %w", err)
	}
	return nil
}

// ErrOutOfStep is an append whose first event does not follow the log's
// last: events in between were never written.
var ErrOutOfStep = errors.New("events out of step with the stream in redis")

// Append adds one event per line of lines, the first of them event first,
// and renews the lease. Events Redis already has are not added again, so
// a write whose reply was lost can be repeated. It reports false when the
// stream is no longer live: somebody else finished it (a DELETE on another
// replica, or a reader that found the lease run out).
func (r *Redis) Append(ctx context.Context, id string, first int64, lines []byte) (bool, error) {
	return r.add(ctx, id, first, lines, false, false)
}

// Finish appends the terminal events and ends the stream, which starts its
// retention; false if it had already ended. first is the id of the first
// line's event, as for Append, or 0 for whatever follows the last (a
// terminal event written by another than the producer). With ifLost, it
// does so only if the producer's lease ran out.
func (r *Redis) Finish(ctx context.Context, id string, first int64, lines []byte, ifLost bool) (bool, error) {
	return r.add(ctx, id, first, lines, true, ifLost)
}

// Renew extends the producer's lease; false when the stream is no longer
// live.
func (r *Redis) Renew(ctx context.Context, id string) (bool, error) {
	return r.add(ctx, id, 0, nil, false, false)
}

func (r *Redis) add(ctx context.Context, id string, first int64, lines []byte, finish, ifLost bool) (bool, error) {
	lines = bytes.TrimSuffix(lines, []byte{'\n'})
	n := 0
	if len(lines) > 0 {
		n = bytes.Count(lines, []byte{'\n'}) + 1
	}
	ok, err := appendScript.Run(ctx, r.c, keys(id), r.appendArgs[0], r.appendArgs[1], r.appendArgs[2],
		flag(finish), flag(ifLost), n, lines, first).Int()
	if err != nil {
		return false, fmt.Errorf("redis append to stream: %w", err)
	}
	if ok == -2 {
		return false, fmt.Errorf("redis append to stream %s at event %d: %w", id, first, ErrOutOfStep)
	}
	return ok == 1, nil
}

// flag is b as a script argument: an interface holding a constant,
// which costs no allocation.
func flag(b bool) any {
	if b {
		return "1"
	}
	return "0"
}

// Ping checks that Redis answers, for readiness probes.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// State is what Redis knows of a stream.
type State struct {
	Meta
	// Last is the id of the last event; Finished whether it ended.
	Last     int64
	Finished bool
}

// Stat returns the state of stream id, ErrNotFound when it is unknown or
// expired.
func (r *Redis) Stat(ctx context.Context, id string) (State, error) {
	m, err := r.c.HGetAll(ctx, keys(id)[0]).Result()
	if err != nil {
		return State{}, fmt.Errorf("redis stream state: %w", err)
	}
	if len(m) == 0 {
		return State{}, ErrNotFound
	}
	last, _ := strconv.ParseInt(m["last"], 10, 64)
	return State{Meta: Meta{Key: m["key"], Model: m["model"]}, Last: last, Finished: m["state"] != "live"}, nil
}

// Read returns the events after id after, waiting up to block for some to
// arrive (empty Events when none did). A log trimmed past after gives
// ErrGap.
func (r *Redis) Read(ctx context.Context, id string, after int64, block time.Duration, buf []byte) (Events, error) {
	res, err := r.c.XRead(ctx, &redis.XReadArgs{
		Streams: []string{keys(id)[1], strconv.FormatInt(after, 10) + "-0"}, Count: 1024, Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return Events{}, nil
	}
	if err != nil {
		return Events{}, fmt.Errorf("redis read stream: %w", err)
	}
	ev := Events{}
	next := after + 1 // the id of the next event to return
	for _, s := range res {
		for _, m := range s.Messages {
			n, _, _ := strings.Cut(m.ID, "-")
			last, perr := strconv.ParseInt(n, 10, 64)
			if perr != nil {
				return Events{}, fmt.Errorf("redis stream entry id %q: %w", m.ID, perr)
			}
			// The entry holds events last-k+1 ... last, one per line;
			// the first may begin before after.
			d, _ := m.Values["d"].(string)
			first := last - int64(strings.Count(d, "\n"))
			if first > next {
				return Events{}, ErrGap
			}
			for ; first < next; first++ {
				_, d, _ = strings.Cut(d, "\n")
			}
			if ev.First == 0 {
				ev.First = next
			}
			buf = append(buf, d...)
			buf = append(buf, '\n')
			next = last + 1
		}
	}
	ev.lines = buf
	return ev, nil
}

// attachScript: ARGV member, ttl ms (0: detach). Returns how many readers
// are attached (live entries), including this one.
var attachScript = redis.NewScript(nowMS + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] == '0' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
end
return redis.call('ZCARD', KEYS[1])`)

// Attach counts reader (unique per connection) as attached for ttl; a
// reader renews by attaching again, and leaves with Detach. A reader whose
// replica dies stops counting after ttl.
func (r *Redis) Attach(ctx context.Context, id, reader string, ttl time.Duration) error {
	_, err := attachScript.Run(ctx, r.c, keys(id)[2:], reader, max(ttl.Milliseconds(), 1)).Result()
	if err != nil {
		return fmt.Errorf("redis attach reader: %w", err)
	}
	return nil
}

// Detach stops counting reader.
func (r *Redis) Detach(ctx context.Context, id, reader string) error {
	_, err := attachScript.Run(ctx, r.c, keys(id)[2:], reader, 0).Result()
	if err != nil {
		return fmt.Errorf("redis detach reader: %w", err)
	}
	return nil
}

// Readers reports how many readers are attached on every replica.
func (r *Redis) Readers(ctx context.Context, id string) (int, error) {
	n, err := attachScript.Run(ctx, r.c, keys(id)[2:], "", 0).Int()
	if err != nil {
		return 0, fmt.Errorf("redis count readers: %w", err)
	}
	return n, nil
}
