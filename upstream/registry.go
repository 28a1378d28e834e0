// Package upstream is where requests meet providers: deployments (a
// model's routes to providers' upstream models), their health and
// cooldown, routing strategies, retries and fallbacks before the first
// token, provider pacing, and building all of it from config. Its one
// call, Registry.Open, returns a stream the relay reads as if it were the
// provider's own.
package upstream

import (
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/limit"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/providers/anthropic"
	"github.com/streamgate/gateway/providers/mock"
	"github.com/streamgate/gateway/providers/openai"
	"github.com/streamgate/gateway/spend"
)

// deployment is one place a model can be served from.
type deployment struct {
	providerName string
	provider     providers.Provider
	// system is the provider's type (openai, anthropic, mock): the
	// GenAI conventions' gen_ai.system.
	system string
	// model is the upstream model name.
	model string
	// The provider's timeouts; 0 is none.
	firstTokenTimeout, idleTimeout, streamTimeout time.Duration
	weight                                        int
	// health is shared by every request using this deployment.
	health *health
	// price is what the deployment costs; nil when it is not known.
	price *spend.Price
}

// Observer is told what routing does, for metrics. Its methods are called
// per attempt, never per token.
type Observer interface {
	// Retried: another attempt on the same provider.
	Retried(provider string)
	// FellBack: model moved on to its next route.
	FellBack(model string)
	// Failed: an attempt on provider failed as e says (the client left:
	// not reported).
	Failed(provider string, e *failure.Error)
	// QueueFull: provider's pacing queue refused a request.
	QueueFull(provider string)
}

// Options are what a Registry needs besides its configuration.
type Options struct {
	Log      *slog.Logger
	Observer Observer
	// Redact makes text safe to log.
	Redact func(string) string
	// Now is the clock of health and cooldowns; nil is time.Now.
	Now func() time.Time
}

// Registry resolves public model names to deployments and opens streams on
// them. It is built for one configuration and read-only after that (but
// for the deployments' health, which is shared and synchronised).
type Registry struct {
	opts       Options
	retry      config.Retry
	policy     healthPolicy
	providers  map[string]providers.Provider
	pcfg       map[string]config.Provider
	models     map[string][]deployment
	strategies map[string]Strategy
	pacers     map[string]*limit.Pacer
	names      []string // sorted, for /v1/models
	fresh      []providers.Provider
}

// Build builds the providers, models and pacers of cfg. prev, the registry
// of the configuration cfg replaces (nil for the first), lends what is
// unchanged: providers with the same settings (and so their connections),
// the health of their deployments, and pacers of the same pace.
func Build(cfg *config.Config, prev *Registry, opts Options) (*Registry, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Registry{opts: opts, retry: cfg.Retry,
		policy:    healthPolicy{threshold: cfg.Health.FailureThreshold, cooldown: cfg.Health.Cooldown.Std()},
		providers: make(map[string]providers.Provider, len(cfg.Providers)), pcfg: cfg.Providers,
		models: make(map[string][]deployment, len(cfg.Models)), strategies: map[string]Strategy{}, pacers: map[string]*limit.Pacer{}}
	reused := map[string]bool{}
	for name, pc := range cfg.Providers {
		if prev != nil {
			if old, ok := prev.pcfg[name]; ok && reflect.DeepEqual(old, pc) {
				r.providers[name], reused[name] = prev.providers[name], true
			}
		}
		if !reused[name] {
			p, err := newProvider(pc)
			if err != nil {
				return nil, fmt.Errorf("provider %s: %w", name, err)
			}
			r.providers[name] = p
			r.fresh = append(r.fresh, p)
			// Said once per provider built, not again at every reload.
			if err := providers.Unusable(p); err != nil {
				opts.Log.Warn("provider is not usable until configured; its models answer 503", "provider", name, "type", pc.Type, "reason", err.Error())
			}
		}
		r.pacers[name] = pacer(name, pc, prev)
	}
	healths := map[[2]string]*health{}
	if prev != nil {
		for _, deps := range prev.models {
			for _, d := range deps {
				if reused[d.providerName] {
					healths[[2]string{d.providerName, d.model}] = d.health
				}
			}
		}
	}
	for name, m := range cfg.Models {
		s, err := strategyNamed(m.Strategy)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", name, err)
		}
		r.strategies[name] = s
		for _, route := range m.Routes {
			upstream := route.Model
			if upstream == "" {
				upstream = name
			}
			pc := cfg.Providers[route.Provider]
			first, idle, total := pc.Timeouts()
			weight := 1
			if route.Weight != nil {
				weight = *route.Weight
			}
			key := [2]string{route.Provider, upstream}
			h := healths[key]
			if h == nil {
				h = &health{}
				healths[key] = h
			}
			r.models[name] = append(r.models[name], deployment{
				providerName: route.Provider, provider: r.providers[route.Provider], system: pc.Type, model: upstream,
				firstTokenTimeout: first, idleTimeout: idle, streamTimeout: total,
				weight: weight, health: h, price: cfg.PriceOf(name, route),
			})
		}
		r.names = append(r.names, name)
	}
	sort.Strings(r.names)
	return r, nil
}

// pacer is provider name's pacer: prev's when the pace is unchanged, so
// its queue carries on; nil when the provider is not paced.
func pacer(name string, pc config.Provider, prev *Registry) *limit.Pacer {
	if pc.RequestsPerSecond <= 0 {
		return nil
	}
	if prev != nil {
		if old, ok := prev.pcfg[name]; ok && old.RequestsPerSecond == pc.RequestsPerSecond && old.QueueTimeout == pc.QueueTimeout && prev.pacers[name] != nil {
			return prev.pacers[name]
		}
	}
	queue := pc.QueueTimeout.Std()
	if pc.QueueTimeout == 0 {
		queue = 5 * time.Second
	}
	return limit.NewPacer(pc.RequestsPerSecond, queue)
}

// newProvider builds a provider of the configured type. A new provider
// type is one package under providers/ and one case here.
func newProvider(pc config.Provider) (providers.Provider, error) {
	switch pc.Type {
	case config.TypeMock:
		opts := mock.Defaults()
		if m := pc.Mock; m != nil {
			setInt(&opts.Tokens, m.Tokens)
			opts.TokenDelay, opts.FirstTokenDelay = m.TokenDelay.Std(), m.FirstTokenDelay.Std()
			opts.FailStatus = m.FailStatus
			setInt(&opts.FailAfter, m.FailAfter)
			setInt(&opts.StallAfter, m.StallAfter)
			setInt(&opts.MalformedAfter, m.MalformedAfter)
			if m.Reply != "" {
				opts.Reply = m.Reply
			}
			opts.Directives = m.Directives
			opts.Reasoning = m.Reasoning
		}
		return mock.New(opts), nil
	case config.TypeAnthropic:
		return anthropic.New(anthropic.Options{
			BaseURL: string(pc.BaseURL), APIKey: pc.APIKey.Reveal(), Headers: revealAll(pc.Headers),
			MaxTokens: pc.MaxTokens, ConnectTimeout: pc.ConnectTimeout.Std(),
		}), nil
	case config.TypeOpenAI:
		opts := openai.Options{
			BaseURL:        string(pc.BaseURL),
			APIKey:         pc.APIKey.Reveal(),
			Organization:   string(pc.Organization),
			ConnectTimeout: pc.ConnectTimeout.Std(),
			Headers:        revealAll(pc.Headers),
			Responses:      pc.ServesResponses(),
		}
		if pc.Azure != nil {
			opts.Azure = &openai.AzureOptions{APIVersion: pc.Azure.APIVersion, Deployments: pc.Azure.Deployments}
		}
		return openai.New(opts)
	}
	return nil, fmt.Errorf("unknown provider type %q", pc.Type)
}

func revealAll(h map[string]config.Secret) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[k] = v.Reveal()
	}
	return out
}

func setInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}

// Secrets lists the credentials of cfg (providers' and the trace
// collector's), which must never leave the process: errors and logs are
// redacted of them.
func Secrets(cfg *config.Config) []string {
	var out []string
	for _, pc := range cfg.Providers {
		if k := pc.APIKey.Reveal(); k != "" {
			out = append(out, k)
		}
		for _, v := range pc.Headers {
			if v.Reveal() != "" {
				out = append(out, v.Reveal())
			}
		}
	}
	// Not upstream's, but as secret: a trace collector's token.
	for _, v := range cfg.Tracing.Headers {
		if v.Reveal() != "" {
			out = append(out, v.Reveal())
		}
	}
	return out
}

// Models returns the public model names, sorted.
func (r *Registry) Models() []string { return r.names }

// Has reports whether model is served.
func (r *Registry) Has(model string) bool { return len(r.models[model]) > 0 }

// Owner is the provider of model's first configured route.
func (r *Registry) Owner(model string) string {
	if d := r.models[model]; len(d) > 0 {
		return d[0].providerName
	}
	return ""
}

// Unavailable says why model cannot answer now (none of its routes'
// providers is usable: a key not set), or is nil when it can.
func (r *Registry) Unavailable(model string) error {
	var why error
	for _, d := range r.models[model] {
		err := providers.Unusable(d.provider)
		if err == nil {
			return nil
		}
		if why == nil {
			why = err
		}
	}
	return why
}

// Strategy names model's routing strategy.
func (r *Registry) Strategy(model string) string { return r.strategies[model].Name() }

// Deployments returns the state of model's routes, in configured order.
func (r *Registry) Deployments(model string) []DeploymentState {
	now := r.opts.Now()
	out := make([]DeploymentState, 0, len(r.models[model]))
	for i := range r.models[model] {
		out = append(out, r.models[model][i].state(now))
	}
	return out
}

// Providers returns every provider by name.
func (r *Registry) Providers() map[string]providers.Provider { return r.providers }

// Fresh returns the providers this registry built anew (not taken over
// from the one it replaced): each is closed once, at the end.
func (r *Registry) Fresh() []providers.Provider { return r.fresh }
