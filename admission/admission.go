package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/limit"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
)

// policy is what one client may do.
type policy struct {
	limits limit.Limits
	// models allowed; nil allows all.
	models map[string]bool
	// defaultMaxTokens is reserved for requests without max_tokens.
	defaultMaxTokens int
}

// limiter holds the admission policies and state.
type limiter struct {
	store    limit.Store
	defaults policy            // clients by IP, when auth is off
	keys     map[string]policy // by key name
	digests  map[string]string // secret SHA-256 → key name, for auth
	pacers   map[string]*limit.Pacer
}

// newLimiter builds the policies of cfg over store. Pacers of providers
// whose pace is unchanged from prevCfg are taken over from prev (both nil
// for the first generation), with their queues.
func newLimiter(cfg *config.Config, store limit.Store, prev *limiter, prevCfg *config.Config) *limiter {
	rl := cfg.RateLimit
	l := &limiter{
		store:    store,
		defaults: toPolicy(rl.Defaults, nil),
		keys:     map[string]policy{},
		digests:  map[string]string{},
		pacers:   map[string]*limit.Pacer{},
	}
	for name, k := range cfg.Keys {
		l.keys[name] = toPolicy(rl.Defaults.Merge(k.Limits), k.Models)
		l.digests[k.Digest()] = name
	}
	for name, p := range cfg.Providers {
		if p.RequestsPerSecond <= 0 {
			continue
		}
		if prev != nil {
			if old, ok := prevCfg.Providers[name]; ok && old.RequestsPerSecond == p.RequestsPerSecond && old.QueueTimeout == p.QueueTimeout && prev.pacers[name] != nil {
				l.pacers[name] = prev.pacers[name]
				continue
			}
		}
		queue := p.QueueTimeout.Std()
		if p.QueueTimeout == 0 {
			queue = 5 * time.Second
		}
		l.pacers[name] = limit.NewPacer(p.RequestsPerSecond, queue)
	}
	return l
}

// newStore returns the configured backend. A Redis client connects
// lazily and reconnects by itself, so an unreachable Redis at start-up is
// handled like one lost later: by the failure mode.
func newStore(rl config.RateLimit, log *slog.Logger) (limit.Store, error) {
	if rl.Backend != "redis" {
		return limit.NewMemory(rl.IdleTTL.Std(), rl.MaxClients, nil), nil
	}
	client, err := newRedisClient(rl.Redis, log, 0)
	if err != nil {
		return nil, err
	}
	return limit.NewRedis(limit.RedisOptions{
		Client: client, LeaseTTL: rl.LeaseTTL.Std(), FailOpen: rl.FailureMode == "fail_open", Log: log,
	}), nil
}

// newRedisClient returns a client for r that fails fast: a request waits
// for the gateway's own fallbacks, not for retries. poolSize 0 keeps
// go-redis's default.
func newRedisClient(r config.Redis, log *slog.Logger, poolSize int) (*redis.Client, error) {
	opts := &redis.Options{
		Addr: string(r.Addr), Username: string(r.Username), Password: r.Password.Reveal(), DB: r.DB,
		MaxRetries: 1, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		PoolSize: poolSize,
	}
	if r.TLS {
		roots, err := r.CertPool()
		if err != nil {
			return nil, fmt.Errorf("redis tls: %w", err)
		}
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	}
	// go-redis logs reconnection attempts itself, to stderr; route them
	// to debug level, since the store already warns about outages. The
	// logger is global to go-redis: set it once, before any client runs.
	setRedisLogger.Do(func() { redis.SetLogger(redisLogger{log}) })
	return redis.NewClient(opts), nil
}

func toPolicy(c config.Limits, models []string) policy {
	get := func(v *int) int {
		if v == nil {
			return 0
		}
		return *v
	}
	p := policy{
		limits: limit.Limits{
			RequestsPerMinute: get(c.RequestsPerMinute), Burst: get(c.Burst),
			ConcurrentStreams: get(c.ConcurrentStreams), TokensPerMinute: get(c.TokensPerMinute),
		},
		defaultMaxTokens: get(c.DefaultMaxTokens),
	}
	if p.defaultMaxTokens == 0 {
		p.defaultMaxTokens = 1024
	}
	if len(models) > 0 {
		p.models = map[string]bool{}
		for _, m := range models {
			p.models[m] = true
		}
	}
	return p
}

// admission is an admitted request's lease and what it reserved.
type admission struct {
	lease    limit.Lease
	reserved int
}

// settle releases the lease when the request is over: with the real usage
// when the answer was complete, the full reservation when the outcome is
// unknown (a stream cut short may have been billed), nothing when the
// upstream was never reached.
func (a *admission) settle(info *middleware.Info, reachedUpstream bool) {
	switch {
	case !reachedUpstream:
		a.lease.Release(0)
	case info.End == "done" || (info.End == "" && info.ErrorCode == ""):
		a.lease.Release(info.PromptTokens + info.CompletionTokens)
	default:
		a.lease.Release(a.reserved)
	}
}

// admit applies the caller's policy to a parsed request: the model must be
// allowed (403), and every limit must admit it (429, before anything
// reaches the upstream). It answers the client itself when it refuses.
// Provider pacing comes later, per attempt (resilientStream.pace).
func (s *Server) admit(c *gin.Context, req *providers.Request, model string) (*admission, bool) {
	info := middleware.Get(c)
	pol, client := s.lim.defaults, "ip:"+c.ClientIP()
	if info.KeyName != "" {
		pol, client = s.lim.keys[info.KeyName], "key:"+info.KeyName
	}
	if pol.models != nil && !pol.models[model] {
		s.fail(c, &apiError{Status: http.StatusForbidden, Type: typeInvalidRequest, Code: "model_not_allowed",
			Message: fmt.Sprintf("key %q may not use model %q", info.KeyName, model)})
		return nil, false
	}
	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = pol.defaultMaxTokens
	}
	reserve := approxPromptTokens(req) + maxTokens
	d, lease, err := s.lim.store.Admit(c.Request.Context(), client, pol.limits, reserve)
	if err != nil {
		s.metrics.rateLimited.WithLabelValues("limiter_unavailable").Inc()
		s.fail(c, &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: "rate_limiter_unavailable", Message: "the rate limiter is unavailable"})
		return nil, false
	}
	setRateHeaders(c.Writer.Header(), d.Status)
	if !d.Allowed {
		s.metrics.rateLimited.WithLabelValues(d.Kind).Inc()
		s.fail(c, rateLimited(d, pol.limits))
		return nil, false
	}
	return &admission{lease: lease, reserved: reserve}, true
}

func rateLimited(d limit.Decision, l limit.Limits) *apiError {
	e := &apiError{Status: http.StatusTooManyRequests, Type: typeRateLimit, RetryAfter: d.RetryAfter}
	switch d.Kind {
	case limit.KindRequests:
		e.Code = "rate_limit_exceeded"
		e.Message = fmt.Sprintf("rate limit reached: %d requests per minute; retry after %s", l.RequestsPerMinute, roundUp(d.RetryAfter))
	case limit.KindConcurrency:
		e.Code = "concurrency_limit_exceeded"
		e.Message = fmt.Sprintf("too many streams in flight: the limit is %d", l.ConcurrentStreams)
	case limit.KindTokens:
		e.Code = "tokens_rate_limit_exceeded"
		e.Message = fmt.Sprintf("rate limit reached: %d tokens per minute; retry after %s", l.TokensPerMinute, roundUp(d.RetryAfter))
		if d.RetryAfter == 0 {
			e.Message = fmt.Sprintf("the request may use more tokens than the limit of %d per minute allows: lower max_tokens or the prompt", l.TokensPerMinute)
		}
	}
	return e
}

func roundUp(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// setRateHeaders writes OpenAI's x-ratelimit-* headers for the limits
// that apply.
func setRateHeaders(h http.Header, s limit.Status) {
	if s.LimitRequests > 0 {
		h.Set("x-ratelimit-limit-requests", strconv.Itoa(s.LimitRequests))
		h.Set("x-ratelimit-remaining-requests", strconv.Itoa(s.RemainingRequests))
		h.Set("x-ratelimit-reset-requests", roundUp(s.ResetRequests).String())
	}
	if s.LimitTokens > 0 {
		h.Set("x-ratelimit-limit-tokens", strconv.Itoa(s.LimitTokens))
		h.Set("x-ratelimit-remaining-tokens", strconv.Itoa(s.RemainingTokens))
		h.Set("x-ratelimit-reset-tokens", roundUp(s.ResetTokens).String())
	}
}

var setRedisLogger sync.Once

// redisLogger adapts go-redis's logger to slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
