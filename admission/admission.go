// Package admission decides whether a client's request may go upstream:
// the models its key may use, its rate limits (requests, concurrent
// streams, tokens) through a limit.Store, and its key's budget through a
// budget.Store. An admitted request holds a Ticket, settled with what its
// stream used and cost, however it ended.
package admission

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamgate/gateway/budget"
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
	// budget is the key's (off for clients by address).
	budget budget.Limits
}

// Observer is told of refusals, for metrics: limit is requests, tokens,
// concurrency, budget or limiter_unavailable; and of a key's spend
// crossing a soft budget amount (kind dollars or tokens).
type Observer interface {
	Rejected(limit string)
	BudgetCrossed(key, kind string)
}

// Parts are what an Admitter works with, beyond the configuration.
type Parts struct {
	Store limit.Store
	// Budgets keeps budget windows; nil when no key has a budget.
	Budgets budget.Store
	// Pending is the process's count of requests in progress.
	Pending *limit.Pending
	Obs     Observer
	Log     *slog.Logger
	// Now is the clock budget windows are read by (time.Now when nil).
	Now func() time.Time
	// Runtime holds the keys made at runtime (nil when there are none);
	// a key of the config's wins over one of the same name.
	Runtime RuntimeKeys
}

// RuntimeKeys are the keys made at runtime, at a revision that moves on
// every change.
type RuntimeKeys interface {
	Revision() int64
	Live(name string) (config.Key, bool)
	Names() []string
}

// Admitter holds one configuration's policies over the process's stores.
type Admitter struct {
	Parts
	defaults policy            // clients by IP, when auth is off
	keys     map[string]policy // by key name
	// worst is each model's highest price over its routes: what a
	// budget reserves at.
	worst map[string]worstPrice
	// base is what a runtime key's limits override.
	base config.Limits
	// runtime caches the policies of the runtime keys at a revision.
	runtimeMu sync.Mutex
	runtime   atomic.Pointer[runtimePolicies]
}

type runtimePolicies struct {
	rev  int64
	keys map[string]policy
}

// worstPrice is the highest price per prompt and per completion token.
type worstPrice struct{ prompt, completion float64 }

// New builds the policies of cfg over p.
func New(cfg *config.Config, p Parts) *Admitter {
	if p.Now == nil {
		p.Now = time.Now
	}
	rl := cfg.RateLimit
	a := &Admitter{Parts: p, defaults: toPolicy(rl.Defaults, nil), keys: map[string]policy{}, worst: map[string]worstPrice{}, base: rl.Defaults}
	for name, k := range cfg.Keys {
		a.keys[name] = toPolicy(rl.Defaults.Merge(k.Limits), k.Models)
	}
	for name, m := range cfg.Models {
		var w worstPrice
		for _, r := range m.Routes {
			if pr := cfg.PriceOf(name, r); pr != nil {
				prompt, completion := pr.Highest()
				w.prompt, w.completion = max(w.prompt, prompt), max(w.completion, completion)
			}
		}
		a.worst[name] = w
	}
	return a
}

// BudgetLimits converts a configured budget.
func BudgetLimits(b *config.Budget) budget.Limits {
	if b == nil {
		return budget.Limits{}
	}
	l := budget.Limits{Period: budget.Period(b.Period), Dollars: budget.Dollars(b.Dollars), Tokens: b.Tokens,
		SoftDollars: budget.Dollars(b.SoftDollars), SoftTokens: b.SoftTokens}
	if l.Period == "" {
		l.Period = budget.Month
	}
	return l
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
		budget:           BudgetLimits(c.Budget),
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

// Client is who asks: a key's name when auth is on, else an address
// (IP is used only without a key).
type Client struct {
	Key string
	IP  string
}

func (a *Admitter) policy(c Client) policy {
	if c.Key != "" {
		p, _ := a.keyPolicy(c.Key)
		return p
	}
	return a.defaults
}

// subject is what c's limits are counted under. Apart from policy, which
// a request asks for four times: the string is built only where it is
// used.
func (c Client) subject() string {
	if c.Key != "" {
		return "key:" + c.Key
	}
	return "ip:" + c.IP
}

// keyPolicy is the policy of the key called name, of the config or made
// at runtime. A runtime key's policies are built once per revision.
func (a *Admitter) keyPolicy(name string) (policy, bool) {
	if p, ok := a.keys[name]; ok || a.Runtime == nil {
		return p, ok
	}
	rp := a.runtime.Load()
	if rev := a.Runtime.Revision(); rp == nil || rp.rev != rev {
		a.runtimeMu.Lock()
		if rp = a.runtime.Load(); rp == nil || rp.rev != rev {
			rp = &runtimePolicies{rev: rev, keys: map[string]policy{}}
			for _, n := range a.Runtime.Names() {
				if k, ok := a.Runtime.Live(n); ok {
					rp.keys[n] = toPolicy(a.base.Merge(k.Limits), k.Models)
				}
			}
			a.runtime.Store(rp)
		}
		a.runtimeMu.Unlock()
	}
	p, ok := rp.keys[name]
	return p, ok
}

// Allows reports whether c may use model.
func (a *Admitter) Allows(c Client, model string) bool {
	p := a.policy(c)
	return p.models == nil || p.models[model]
}

// Hold counts a request of c in from the moment its headers are in,
// within c's concurrent-stream limit, before its body is read: a client
// trickling bodies over many connections is refused as one opening too
// many streams. Release it when the request is over, once; held says
// under what (a string and no closure: nothing to allocate).
func (a *Admitter) Hold(c Client) (held string, e *failure.Error) {
	pol, client := a.policy(c), c.subject()
	if !a.Pending.Hold(client, pol.limits.ConcurrentStreams) {
		a.Obs.Rejected(limit.KindConcurrency)
		return "", &failure.Error{Status: http.StatusTooManyRequests, Type: failure.TypeRateLimit, Code: "concurrency_limit_exceeded", RetryAfter: time.Second,
			Message: fmt.Sprintf("too many requests in flight: the limit is %d", pol.limits.ConcurrentStreams)}
	}
	return client, nil
}

// Release ends a Hold.
func (a *Admitter) Release(held string) { a.Pending.Release(held) }

// Ticket is an admitted request's lease and budget hold, and what it
// reserved.
type Ticket struct {
	a        *Admitter
	key      string
	lease    limit.Lease
	hold     budget.Hold // nil without a budget
	budget   budget.Limits
	reserved int
}

// Unused releases a ticket whose request never reached an upstream.
func (t *Ticket) Unused() { t.Settle(0, 0) }

// Settle releases the ticket when the request is over, charging the
// tokens used (reported by the upstream, or counted) and their cost in
// dollars, however the stream ended: a stream cut short by the client, a
// timeout or shutdown was billed for what it generated.
func (t *Ticket) Settle(used int, cost float64) {
	t.lease.Release(used)
	if t.hold == nil {
		return
	}
	before, after := t.hold.Settle(budget.Spend{Cost: budget.Dollars(cost), Tokens: int64(used)})
	for _, kind := range budget.Crossed(t.budget, before, after) {
		t.a.Obs.BudgetCrossed(t.key, kind)
		if t.a.Log != nil {
			t.a.Log.Warn("key went over its soft budget", "key", t.key, "kind", kind, "period", string(t.budget.Period),
				"spent_usd", after.Cost.Float(), "tokens", after.Tokens)
		}
	}
}

// Admit applies c's limits and budget to a parsed request for a model it
// Allows: each must admit it (429, before anything reaches the upstream).
// It sets OpenAI's x-ratelimit-* headers in h. Provider pacing comes
// later, per attempt (upstream).
func (a *Admitter) Admit(ctx context.Context, h http.Header, c Client, model string, req *providers.Request) (*Ticket, *failure.Error) {
	pol := a.policy(c)
	maxTokens := req.MaxTokens
	if maxTokens == 0 {
		maxTokens = pol.defaultMaxTokens
	}
	prompt := tokens.Approx(req.Messages)
	w := a.worst[model]
	return a.admit(ctx, h, c, prompt+maxTokens, (float64(prompt)*w.prompt+float64(maxTokens)*w.completion)/1e6)
}

func (a *Admitter) admit(ctx context.Context, h http.Header, c Client, reserve int, cost float64) (*Ticket, *failure.Error) {
	pol, client := a.policy(c), c.subject()
	t := &Ticket{a: a, key: c.Key, budget: pol.budget, reserved: reserve}
	// The budget first: a request it refuses takes nothing from the
	// rate limits.
	if pol.budget.On() && c.Key != "" && a.Budgets != nil {
		d, hold, err := a.Budgets.Reserve(ctx, c.Key, pol.budget, a.Now(), budget.Spend{Cost: budget.Dollars(cost), Tokens: int64(reserve)})
		if err != nil {
			a.Obs.Rejected("limiter_unavailable")
			return nil, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "budget_unavailable", Message: "the budget store is unavailable"}
		}
		if !d.Allowed {
			a.Obs.Rejected("budget")
			return nil, a.overBudget(d, pol.budget)
		}
		t.hold = hold
	}
	d, lease, err := a.Store.Admit(ctx, client, pol.limits, reserve)
	if err != nil {
		t.settleBudget()
		a.Obs.Rejected("limiter_unavailable")
		return nil, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "rate_limiter_unavailable", Message: "the rate limiter is unavailable"}
	}
	setRateHeaders(h, d.Status)
	if !d.Allowed {
		t.settleBudget()
		a.Obs.Rejected(d.Kind)
		return nil, rateLimited(d, pol.limits)
	}
	t.lease = lease
	return t, nil
}

// settleBudget gives back the budget reservation of a request refused
// later.
func (t *Ticket) settleBudget() {
	if t.hold != nil {
		t.hold.Settle(budget.Spend{})
	}
}

// overBudget is the refusal of a request over its key's budget.
func (a *Admitter) overBudget(d budget.Decision, l budget.Limits) *failure.Error {
	e := &failure.Error{Status: http.StatusTooManyRequests, Type: failure.TypeRateLimit, Code: "budget_exceeded"}
	e.Message = "budget exceeded: this key may spend " + l.Describe(d.Kind)
	if d.Reset.IsZero() {
		e.Message += "; the budget does not reset"
		return e
	}
	e.RetryAfter = d.Reset.Sub(a.Now())
	e.Message += "; it resets at " + d.Reset.UTC().Format(time.RFC3339)
	return e
}

// AdmitTokens admits a request that is no stream of tokens (embeddings)
// for model: it reserves reserve prompt tokens and takes a request and a
// slot as any other.
func (a *Admitter) AdmitTokens(ctx context.Context, h http.Header, c Client, model string, reserve int) (*Ticket, *failure.Error) {
	return a.admit(ctx, h, c, reserve, float64(reserve)*a.worst[model].prompt/1e6)
}

// AdmitReader admits a reader of a stream already generated: it counts
// against c's request rate and concurrent streams, and reserves no tokens
// (the stream's own request holds them).
func (a *Admitter) AdmitReader(ctx context.Context, h http.Header, c Client) (*Ticket, *failure.Error) {
	return a.admit(ctx, h, c, 0, 0)
}

// Budget is key's budget and its current window's spend; ok is false when
// the key has none.
func (a *Admitter) Budget(ctx context.Context, key string) (l budget.Limits, spent budget.Spend, reset time.Time, ok bool, err error) {
	pol, known := a.keyPolicy(key)
	if !known || !pol.budget.On() || a.Budgets == nil {
		return budget.Limits{}, budget.Spend{}, time.Time{}, false, nil
	}
	now := a.Now()
	_, reset = pol.budget.Window(now)
	spent, err = a.Budgets.Spent(ctx, key, pol.budget, now)
	return pol.budget, spent, reset, true, err
}

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
// that apply. The keys are set as net/http would canonicalize them and
// the values share one array: Header.Set made a canonical copy of each
// lower-case key and a slice for each value, 12 allocations a request.
func setRateHeaders(h http.Header, s limit.Status) {
	if s.LimitRequests <= 0 && s.LimitTokens <= 0 {
		return
	}
	v := headerValues{h: h, v: make([]string, 0, 6)}
	if s.LimitRequests > 0 {
		v.set("X-Ratelimit-Limit-Requests", strconv.Itoa(s.LimitRequests))
		v.set("X-Ratelimit-Remaining-Requests", strconv.Itoa(s.RemainingRequests))
		v.set("X-Ratelimit-Reset-Requests", roundUp(s.ResetRequests).String())
	}
	if s.LimitTokens > 0 {
		v.set("X-Ratelimit-Limit-Tokens", strconv.Itoa(s.LimitTokens))
		v.set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(s.RemainingTokens))
		v.set("X-Ratelimit-Reset-Tokens", roundUp(s.ResetTokens).String())
	}
}

// headerValues sets headers whose values share one backing array.
type headerValues struct {
	h http.Header
	v []string
}

// set sets key, which must be in canonical form, to the one value val.
// Capped at its own element, a value slice cannot be appended to in place.
func (hv *headerValues) set(key, val string) {
	hv.v = append(hv.v, val)
	n := len(hv.v)
	hv.h[key] = hv.v[n-1 : n : n]
}
