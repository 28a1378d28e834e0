package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/budget"
	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/internal/offstack"
	"github.com/streamgate/gateway/ledger"
	"github.com/streamgate/gateway/limit"
)

// newStore returns the configured rate-limit backend. A Redis client
// connects lazily and reconnects by itself, so an unreachable Redis at
// start-up is handled like one lost later: by the failure mode.
func newStore(rl config.RateLimit, log *slog.Logger) (limit.Store, error) {
	if rl.Backend != "redis" {
		return limit.NewMemory(rl.IdleTTL.Std(), rl.MaxClients, nil), nil
	}
	client, err := newPipelinedClient(rl.Redis, 0)
	if err != nil {
		return nil, err
	}
	return limit.NewRedis(limit.RedisOptions{
		Client: client, LeaseTTL: rl.LeaseTTL.Std(), FailOpen: rl.FailureMode == "fail_open", Log: log,
	}), nil
}

// newBudgets returns the store of key budgets: in Redis beside the rate
// limits when they are there, else in memory, each window started from
// what the ledger (usage, when there is one) recorded for it.
func newBudgets(rl config.RateLimit, usage *ledger.DB, log *slog.Logger) (budget.Store, error) {
	if rl.Backend == "redis" {
		client, err := newPipelinedClient(rl.Redis, 0)
		if err != nil {
			return nil, err
		}
		return budget.NewRedis(budget.RedisOptions{Client: client, FailOpen: rl.FailureMode == "fail_open", Log: log}), nil
	}
	if usage == nil {
		return budget.NewMemory(nil, log), nil
	}
	return budget.NewMemory(func(ctx context.Context, key string, from time.Time) (budget.Spend, error) {
		t, err := usage.Usage(ctx, ledger.Query{From: from, To: time.Now().Add(time.Hour), Key: key})
		if err != nil || len(t) == 0 {
			return budget.Spend{}, err
		}
		return budget.Spend{Cost: budget.Dollars(t[0].Cost), Tokens: t[0].PromptTokens + t[0].CompletionTokens}, nil
	}, log), nil
}

// redisBuffer is the size of each pooled Redis connection's read and
// write buffers. go-redis's default is 32 KiB each, for large values; the
// gateway's commands and replies are small (an admission, a batch of
// events), larger ones are read and written past the buffer, and the
// streams' pool alone holds up to resumable.RedisPool connections: 32 MB
// of buffers at 10,000 open streams, where 4 KiB makes 4 (issue 18).
const redisBuffer = 4 << 10

// newRedisClient returns a client for r that fails fast: a request waits
// for the gateway's own fallbacks, not for retries. poolSize 0 keeps
// go-redis's default. It is the one place Redis clients are made.
func newRedisClient(r config.Redis, poolSize int) (*redis.Client, error) {
	return dialRedis(r, poolSize, 1)
}

// dialRedis is newRedisClient with maxRetries retries of a command that
// failed on the network (-1: none).
func dialRedis(r config.Redis, poolSize, maxRetries int) (*redis.Client, error) {
	opts := &redis.Options{
		Addr: string(r.Addr), Username: string(r.Username), Password: r.Password.Reveal(), DB: r.DB,
		MaxRetries: maxRetries, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		PoolSize: poolSize, ReadBufferSize: redisBuffer, WriteBufferSize: redisBuffer,
	}
	if r.TLS {
		roots, err := r.CertPool()
		if err != nil {
			return nil, fmt.Errorf("redis tls: %w", err)
		}
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	}
	c := redis.NewClient(opts)
	c.AddHook(offstackHook{})
	return c, nil
}

// pipelined is a Redis client whose commands go out autopipelined:
// commands that callers send at the same time share one write and one
// read, as a single pipeline, instead of a round trip each. Every stream
// costs some five commands (its admission and settle; its log's
// creation, writes and finish), most of a round trip's CPU is the
// syscalls on both sides, and under load many are in flight at once. At
// 64 streams of 64 tokens on /v1/stream with limits and logs in Redis,
// the gateway's CPU a stream fell 20% and Redis's 38% (issue 18). A lone
// command still goes out at once, in one round trip, but through
// go-redis's batching goroutines: one stream at a time costs about 5%
// more (−4 to +14% a round, that shape's spread). Commands that block (XREAD BLOCK) and
// Watch run on the client as before: go-redis never batches them.
//
// One batch is out at a time (go-redis's default, which keeps batches
// deep): a command sent while one is out waits for it, up to a round
// trip more. A batched command waits for its batch, not for its
// context: the socket's one-second timeouts bound it. It is not
// retried: a retried batch would run an admission twice, and a write
// that took two seconds would leave a stream's mirror no time to go
// again within its lease (TestMirrorRidesOutAStall); the callers have
// their own fallbacks.
type pipelined struct {
	*redis.AutoPipeliner
	client *redis.Client
}

// newPipelinedClient is newRedisClient's client, autopipelined and
// without retries.
func newPipelinedClient(r config.Redis, poolSize int) (*pipelined, error) {
	c, err := dialRedis(r, poolSize, -1)
	if err != nil {
		return nil, err
	}
	ap, err := c.AutoPipeline()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("redis autopipeline: %w", err), c.Close())
	}
	return &pipelined{AutoPipeliner: ap, client: c}, nil
}

// Close sends the commands already queued, then closes the connections.
func (p *pipelined) Close() error {
	err := p.AutoPipeliner.Close()
	if werr := p.AutoPipeliner.WaitClosed(); err == nil {
		err = werr
	}
	return errors.Join(err, p.client.Close())
}

// offstackHook runs every Redis command and pipeline on a goroutine of
// its own (package offstack). A command goes some 10 KiB deep through
// go-redis's pool, protocol and network code, and the calls a stream's
// handler makes (its admission, creating its resumable log) left the
// handler with a 16 or 32 KiB stack for the rest of the stream: 6.6 KiB
// more per open native stream with Redis (issue 18). The hop costs a few
// microseconds against a round trip of tens. Commands from goroutines of
// their own (the streams' mirror writers, offstack.Here) run where they
// are. Autopipelined batches (pipelined) hop too: go-redis starts a
// goroutine for each, whose stack would otherwise grow for it; run on
// offstack's kept workers instead, one stream at a time cost 7–10% less
// CPU than where go-redis runs them.
type offstackHook struct{}

func (offstackHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (offstackHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if offstack.RunsHere(ctx) {
			return next(ctx, cmd)
		}
		var err error
		offstack.Run(func() { err = next(ctx, cmd) })
		return err
	}
}

func (offstackHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if offstack.RunsHere(ctx) {
			return next(ctx, cmds)
		}
		var err error
		offstack.Run(func() { err = next(ctx, cmds) })
		return err
	}
}
