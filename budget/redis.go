package budget

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/logevery"
)

var _ Store = (*Redis)(nil)

// Redis keeps budget windows in Redis, shared by every replica pointing at
// the same server: one hash per client and window, which a reservation
// checks and increments in one script, so replicas admitting at once
// cannot overshoot. A day's or month's hash expires a day after its window
// ends.
type Redis struct {
	rdb      redis.UniversalClient
	prefix   string
	failOpen bool
	log      *slog.Logger
	// failures keeps "Redis unreachable" to one line a second.
	failures logevery.Second
}

// RedisOptions configures a Redis store.
type RedisOptions struct {
	Client redis.UniversalClient
	Prefix string // default "gw:"
	// FailOpen admits requests while Redis is unreachable, without
	// counting them; otherwise Reserve fails.
	FailOpen bool
	Log      *slog.Logger
}

// NewRedis returns a store over o.Client, which Close closes.
func NewRedis(o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = "gw:"
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Redis{rdb: o.Client, prefix: o.Prefix, failOpen: o.FailOpen, log: o.Log}
}

// Close implements Store.
func (r *Redis) Close() error { return r.rdb.Close() }

// reserveScript admits a reservation within the hard amounts, or takes
// nothing. KEYS: the window's hash. ARGV: dollar limit, token limit (0:
// none), reserved cost, reserved tokens, expiry (unix seconds, 0: never).
// Returns allowed (0/1), kind, and the window's cost and tokens after.
var reserveScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'c', 't')
local c, t = tonumber(v[1]) or 0, tonumber(v[2]) or 0
local lc, lt, rc, rt, exp = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if lc > 0 and c + rc > lc then return {0, 'dollars', tostring(c), tostring(t)} end
if lt > 0 and t + rt > lt then return {0, 'tokens', tostring(c), tostring(t)} end
c = redis.call('HINCRBY', KEYS[1], 'c', rc)
t = redis.call('HINCRBY', KEYS[1], 't', rt)
if exp > 0 then redis.call('EXPIREAT', KEYS[1], exp) end
return {1, '', tostring(c), tostring(t)}
`)

// settleScript replaces a reservation with the usage: c and t hold
// spend plus reservations, sc and st spend alone. KEYS: the window's
// hash. ARGV: cost and tokens to add to c and t (negative: given back),
// cost and tokens used. Returns the window's spend after.
var settleScript = redis.NewScript(`
redis.call('HINCRBY', KEYS[1], 'c', ARGV[1])
redis.call('HINCRBY', KEYS[1], 't', ARGV[2])
local c = redis.call('HINCRBY', KEYS[1], 'sc', ARGV[3])
local t = redis.call('HINCRBY', KEYS[1], 'st', ARGV[4])
return {tostring(c), tostring(t)}
`)

// key is the hash of client's window id, hash-tagged like the rate
// limiter's keys so that a Redis Cluster keeps a client on one shard.
func (r *Redis) key(client, id string) string { return r.prefix + "{" + client + "}:budget:" + id }

// Reserve implements Store.
func (r *Redis) Reserve(ctx context.Context, client string, l Limits, now time.Time, res Spend) (Decision, Hold, error) {
	res = clamp(res)
	id, reset := l.Window(now)
	var exp int64
	if !reset.IsZero() {
		exp = reset.Add(24 * time.Hour).Unix()
	}
	key := r.key(client, id)
	out, err := reserveScript.Run(ctx, r.rdb, []string{key}, int64(l.Dollars), l.Tokens, int64(res.Cost), res.Tokens, exp).Slice()
	if err == nil && len(out) != 4 {
		err = fmt.Errorf("reserve script returned %d values", len(out))
	}
	if err != nil {
		return r.unavailable(err)
	}
	allowed, _ := out[0].(int64)
	kind, _ := out[1].(string)
	d := Decision{Allowed: allowed == 1, Kind: kind, Spend: spendOf(out[2], out[3]), Reset: reset}
	if !d.Allowed {
		return d, nil, nil
	}
	return d, &redisHold{r: r, key: key, reserved: res}, nil
}

// Spent implements Store.
func (r *Redis) Spent(ctx context.Context, client string, l Limits, now time.Time) (Spend, error) {
	id, _ := l.Window(now)
	v, err := r.rdb.HMGet(ctx, r.key(client, id), "sc", "st").Result()
	if err != nil {
		return Spend{}, fmt.Errorf("budget: %w", err)
	}
	return spendOf(v[0], v[1]), nil
}

func spendOf(c, t any) Spend {
	num := func(v any) int64 {
		s, _ := v.(string)
		n, _ := strconv.ParseInt(s, 10, 64)
		return n
	}
	return Spend{Cost: Nanos(num(c)), Tokens: num(t)}
}

// unavailable decides what a Redis failure means for a request: admitted
// uncounted (fail open) or refused with the error (fail closed).
func (r *Redis) unavailable(err error) (Decision, Hold, error) {
	if r.failures.Allow() {
		r.log.Warn("budgets: redis unavailable", "error", err.Error(), "fail_open", r.failOpen)
	}
	if r.failOpen {
		return Decision{Allowed: true}, noHold{}, nil
	}
	return Decision{}, nil, fmt.Errorf("budget: %w", err)
}

type noHold struct{}

func (noHold) Settle(Spend) (Spend, Spend) { return Spend{}, Spend{} }

type redisHold struct {
	r        *Redis
	key      string
	reserved Spend
	once     sync.Once
}

func (h *redisHold) Settle(used Spend) (before, after Spend) {
	h.once.Do(func() {
		used = clamp(used)
		// Settle even if the request's context is gone.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := settleScript.Run(ctx, h.r.rdb, []string{h.key}, int64(used.Cost-h.reserved.Cost), used.Tokens-h.reserved.Tokens,
			int64(used.Cost), used.Tokens).Slice()
		if err != nil || len(out) != 2 {
			h.r.log.Warn("budgets: settling failed; the window keeps the reservation", "error", fmt.Sprint(err))
			return
		}
		after = spendOf(out[0], out[1])
		before = Spend{Cost: after.Cost - used.Cost, Tokens: after.Tokens - used.Tokens}
	})
	return before, after
}
