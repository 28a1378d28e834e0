// Package admission decides whether a client's request may go upstream:
// the models its key may use, and its rate limits (requests, concurrent
// streams, tokens) through a limit.Store. An admitted request holds a
// Ticket, settled with how its stream ended.
package admission

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/tokens"
	"github.com/streamgate/gateway/limit"
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

// Observer is told of refusals, for metrics: limit is requests, tokens,
// concurrency or limiter_unavailable.
type Observer interface {
	Rejected(limit string)
}

// Admitter holds one configuration's policies over the process's store.
type Admitter struct {
	store    limit.Store
	pending  *limit.Pending
	obs      Observer
	defaults policy            // clients by IP, when auth is off
	keys     map[string]policy // by key name
}

// New builds the policies of cfg over store, and pending (the process's
// count of requests in progress).
func New(cfg *config.Config, store limit.Store, pending *limit.Pending, obs Observer) *Admitter {
	rl := cfg.RateLimit
	a := &Admitter{store: store, pending: pending, obs: obs, defaults: toPolicy(rl.Defaults, nil), keys: map[string]policy{}}
	for name, k := range cfg.Keys {
		a.keys[name] = toPolicy(rl.Defaults.Merge(k.Limits), k.Models)
	}
	return a
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

// Client is who asks: a key's name when auth is on, else an address.
type Client struct {
	Key string
	IP  string
}

func (a *Admitter) policy(c Client) (policy, string) {
	if c.Key != "" {
		return a.keys[c.Key], "key:" + c.Key
	}
	return a.defaults, "ip:" + c.IP
}

// Allows reports whether c may use model.
func (a *Admitter) Allows(c Client, model string) bool {
	p, _ := a.policy(c)
	return p.models == nil || p.models[model]
}

// Hold counts a request of c in from the moment its headers are in,
// within c's concurrent-stream limit, before its body is read: a client
// trickling bodies over many connections is refused as one opening too
// many streams. Release it when the request is over.
func (a *Admitter) Hold(c Client) (release func(), e *failure.Error) {
	pol, client := a.policy(c)
	release, ok := a.pending.Hold(client, pol.limits.ConcurrentStreams)
	if !ok {
		a.obs.Rejected(limit.KindConcurrency)
		return nil, &failure.Error{Status: http.StatusTooManyRequests, Type: failure.TypeRateLimit, Code: "concurrency_limit_exceeded", RetryAfter: time.Second,
			Message: fmt.Sprintf("too many requests in flight: the limit is %d", pol.limits.ConcurrentStreams)}
	}
	return release, nil
}

// Ticket is an admitted request's lease and what it reserved.
type Ticket struct {
	lease    limit.Lease
	reserved int
}

// Unused releases a ticket whose request never reached an upstream.
func (t *Ticket) Unused() { t.lease.Release(0) }

// Settle releases the ticket when the request is over, charging the
// tokens used (reported by the upstream, or counted), however the stream
// ended: a stream cut short by the client, a timeout or shutdown was
// billed for what it generated.
func (t *Ticket) Settle(used int) {
	t.lease.Release(used)
}

// Admit applies c's limits to a parsed request for a model it Allows:
// every limit must admit it (429, before anything reaches the upstream).
// It sets OpenAI's x-ratelimit-* headers in h. Provider pacing comes
// later, per attempt (upstream).
func (a *Admitter) Admit(ctx context.Context, h http.Header, c Client, req *providers.Request) (*Ticket, *failure.Error) {
	pol, _ := a.policy(c)
	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = pol.defaultMaxTokens
	}
	return a.admit(ctx, h, c, tokens.Approx(req.Messages)+maxTokens)
}

func (a *Admitter) admit(ctx context.Context, h http.Header, c Client, reserve int) (*Ticket, *failure.Error) {
	pol, client := a.policy(c)
	d, lease, err := a.store.Admit(ctx, client, pol.limits, reserve)
	if err != nil {
		a.obs.Rejected("limiter_unavailable")
		return nil, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "rate_limiter_unavailable", Message: "the rate limiter is unavailable"}
	}
	setRateHeaders(h, d.Status)
	if !d.Allowed {
		a.obs.Rejected(d.Kind)
		return nil, rateLimited(d, pol.limits)
	}
	return &Ticket{lease: lease, reserved: reserve}, nil
}

// AdmitTokens admits a request that is no stream of tokens (embeddings):
// it reserves reserve tokens and takes a request and a slot as any other.
func (a *Admitter) AdmitTokens(ctx context.Context, h http.Header, c Client, reserve int) (*Ticket, *failure.Error) {
	return a.admit(ctx, h, c, reserve)
}

// AdmitReader admits a reader of a stream already generated: it counts
// against c's request rate and concurrent streams, and reserves no tokens
// (the stream's own request holds them).
func (a *Admitter) AdmitReader(ctx context.Context, h http.Header, c Client) (*Ticket, *failure.Error) {
	return a.admit(ctx, h, c, 0)
}

// Store is the limit store policies are applied over.
func (a *Admitter) Store() limit.Store { return a.store }

func rateLimited(d limit.Decision, l limit.Limits) *failure.Error {
	e := &failure.Error{Status: http.StatusTooManyRequests, Type: failure.TypeRateLimit, RetryAfter: d.RetryAfter}
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
