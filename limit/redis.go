package limit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/logevery"
)

var _ Store = (*Redis)(nil)

// Redis keeps limiter state in Redis, shared by every gateway replica that
// points at the same server. Admission is one Lua script, atomic across
// replicas and across the three limits, timed by Redis's own clock so
// replicas need not agree on theirs. A stream slot is a lease in a sorted
// set, scored by its expiry: this process renews its leases while their
// streams run, so the slots of a replica that dies free themselves within
// the lease TTL.
type Redis struct {
	rdb      redis.UniversalClient
	prefix   string
	leaseTTL time.Duration
	failOpen bool
	log      *slog.Logger

	mu      sync.Mutex
	leases  map[string]string // lease id → its streams key, renewed until released
	stop    chan struct{}
	done    chan struct{}
	renewed func(n int)
	// failures keeps "Redis unreachable" to one line a second.
	failures logevery.Second
}

// RedisOptions configures a Redis store.
type RedisOptions struct {
	Client   redis.UniversalClient
	Prefix   string        // key prefix (default "gw:")
	LeaseTTL time.Duration // default 30s
	// FailOpen admits requests while Redis is unreachable; otherwise they
	// are refused with an error.
	FailOpen bool
	Log      *slog.Logger
	// Renewed, if set, is called after each round of lease renewals that
	// renewed any, with how many; tests synchronise on it.
	Renewed func(n int)
}

// NewRedis starts a store and its lease renewer; Close stops it.
func NewRedis(o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = "gw:"
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	r := &Redis{rdb: o.Client, prefix: o.Prefix, leaseTTL: o.LeaseTTL, failOpen: o.FailOpen, log: o.Log, renewed: o.Renewed,
		leases: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go r.renew()
	return r
}

// Close stops renewing leases (they then expire, as when the process
// dies), waits for the renewer, and closes the client.
// Ping checks that Redis answers, for readiness probes.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

func (r *Redis) Close() error {
	select {
	case <-r.stop:
		return nil
	default:
		close(r.stop)
	}
	<-r.done
	return r.rdb.Close()
}

// admitScript checks every limit and takes from all of them, or from none.
// KEYS: requests bucket, tokens bucket, streams set.
// ARGV: rpm, burst, concurrent, tpm, reserve, lease id, lease ttl (ms).
// Returns: allowed (0/1), kind, retry after (ms), request tokens left,
// tokens left (both as strings: Lua numbers would be truncated).
var admitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, burst, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tpm, reserve = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease, ttl = ARGV[6], tonumber(ARGV[7])

local function level(key, per_ms, cap)
  local v = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then return cap end
  if now > ts then tokens = math.min(cap, tokens + (now - ts) * per_ms) end
  return tokens
end

local req, tok = -1, -1
if rpm > 0 then req = level(KEYS[1], rpm / 60000, burst) end
if tpm > 0 then tok = level(KEYS[2], tpm / 60000, tpm) end
local inflight = 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  inflight = redis.call('ZCARD', KEYS[3])
end

if conc > 0 and inflight >= conc then
  return {0, 'concurrency', 1000, tostring(req), tostring(tok)}
end
if rpm > 0 and req < 1 then
  return {0, 'requests', math.ceil((1 - req) * 60000 / rpm), tostring(req), tostring(tok)}
end
if tpm > 0 and tok < reserve then
  local wait = 0
  if reserve <= tpm then wait = math.ceil((reserve - tok) * 60000 / tpm) end
  return {0, 'tokens', wait, tostring(req), tostring(tok)}
end

if rpm > 0 then
  req = req - 1
  redis.call('HSET', KEYS[1], 'tokens', tostring(req), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 60000 / rpm) + 1000)
end
if tpm > 0 then
  tok = tok - reserve
  redis.call('HSET', KEYS[2], 'tokens', tostring(tok), 'ts', now)
  redis.call('PEXPIRE', KEYS[2], 120000)
end
redis.call('ZADD', KEYS[3], now + ttl, lease)
redis.call('PEXPIRE', KEYS[3], ttl * 2)
return {1, '', 0, tostring(req), tostring(tok)}
`)

// releaseScript frees a lease and settles its tokens.
// KEYS: tokens bucket, streams set. ARGV: lease id, tpm, tokens to add back
// (negative: owed).
var releaseScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
local tpm, back = tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm > 0 and back ~= 0 then
  local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if tokens == nil then tokens, ts = tpm, now end
  if now > ts then tokens = math.min(tpm, tokens + (now - ts) * tpm / 60000) end
  tokens = math.max(-tpm, math.min(tpm, tokens + back))
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
return 1
`)

// renewScript extends a lease still held (a released or expired one stays
// gone), by Redis's clock as admission uses. KEYS: streams set. ARGV: lease
// id, ttl (ms).
var renewScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return 1
`)

// keys returns the client's three keys, hash-tagged so that a Redis
// Cluster keeps them on one shard, as the scripts need.
func (r *Redis) keys(client string) []string {
	base := r.prefix + "{" + client + "}:"
	return []string{base + "req", base + "tok", base + "streams"}
}

// Admit implements Store.
func (r *Redis) Admit(ctx context.Context, client string, l Limits, reserve int) (Decision, Lease, error) {
	reserve = clampTokens(reserve)
	id := newLeaseID()
	keys := r.keys(client)
	res, err := admitScript.Run(ctx, r.rdb, keys,
		l.RequestsPerMinute, l.burst(), l.ConcurrentStreams, l.TokensPerMinute, reserve, id, r.leaseTTL.Milliseconds()).Slice()
	if err != nil {
		return r.unavailable(err)
	}
	if len(res) != 5 {
		return r.unavailable(fmt.Errorf("admit script returned %d values", len(res)))
	}
	allowed, _ := res[0].(int64)
	kind, _ := res[1].(string)
	waitMs, _ := res[2].(int64)
	req := parseLevel(res[3])
	tok := parseLevel(res[4])
	d := Decision{Allowed: allowed == 1, Kind: kind, RetryAfter: seconds(float64(waitMs) / 1000), Status: status(l, req, tok)}
	if !d.Allowed {
		return d, nil, nil
	}
	r.mu.Lock()
	r.leases[id] = keys[2]
	r.mu.Unlock()
	return d, &redisLease{r: r, id: id, keys: keys, tpm: l.TokensPerMinute, reserved: reserve}, nil
}

func parseLevel(v any) float64 {
	s, _ := v.(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return f
}

func status(l Limits, req, tok float64) Status {
	var s Status
	if l.RequestsPerMinute > 0 && req >= 0 {
		s.LimitRequests, s.RemainingRequests = l.RequestsPerMinute, max(0, int(math.Floor(req)))
		s.ResetRequests = untilFull(req, float64(l.burst()), float64(l.RequestsPerMinute)/60)
	}
	if l.TokensPerMinute > 0 {
		s.LimitTokens, s.RemainingTokens = l.TokensPerMinute, max(0, int(math.Floor(tok)))
		s.ResetTokens = untilFull(tok, float64(l.TokensPerMinute), float64(l.TokensPerMinute)/60)
	}
	return s
}

// unavailable decides what a Redis failure means for a request: admitted
// without limits (fail open) or refused with the error (fail closed).
func (r *Redis) unavailable(err error) (Decision, Lease, error) {
	if r.failures.Allow() {
		r.log.Warn("rate limiter: redis unavailable", "error", err.Error(), "fail_open", r.failOpen)
	}
	if r.failOpen {
		return Decision{Allowed: true}, noLease{}, nil
	}
	return Decision{}, nil, fmt.Errorf("rate limiter: %w", err)
}

type noLease struct{}

func (noLease) Release(int) {}

type redisLease struct {
	r        *Redis
	id       string
	keys     []string
	tpm      int
	reserved int
	once     sync.Once
}

func (l *redisLease) Release(used int) {
	l.once.Do(func() {
		l.r.mu.Lock()
		delete(l.r.leases, l.id)
		l.r.mu.Unlock()
		// Settle even if the request's context is gone.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		back := 0
		if l.tpm > 0 {
			back = l.reserved - clampTokens(used)
		}
		if err := releaseScript.Run(ctx, l.r.rdb, []string{l.keys[1], l.keys[2]}, l.id, l.tpm, back).Err(); err != nil {
			l.r.log.Warn("rate limiter: release failed; the slot frees itself when its lease expires", "error", err.Error())
		}
	})
}

// renew extends the leases of streams still running, every third of the
// lease TTL.
func (r *Redis) renew() {
	defer close(r.done)
	t := time.NewTicker(r.leaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.mu.Lock()
		live := make(map[string]string, len(r.leases))
		for id, key := range r.leases {
			live[id] = key
		}
		r.mu.Unlock()
		if len(live) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.leaseTTL/3)
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for id, key := range live {
				// Eval, not Run: in a pipeline Run cannot fall back when the
				// script is not cached yet.
				renewScript.Eval(ctx, p, []string{key}, id, r.leaseTTL.Milliseconds())
			}
			return nil
		})
		cancel()
		if err != nil {
			r.log.Warn("rate limiter: renewing leases failed", "error", err.Error())
		} else if r.renewed != nil {
			r.renewed(len(live))
		}
	}
}

func newLeaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
