package gateway

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/providers/anthropic"
	"github.com/streamgate/gateway/providers/mock"
	"github.com/streamgate/gateway/providers/openai"
)

// deployment is one place a model can be served from.
type deployment struct {
	providerName string
	provider     providers.Provider
	// model is the upstream model name.
	model string
	// The provider's timeouts; 0 is none.
	firstTokenTimeout, idleTimeout, streamTimeout time.Duration
	weight                                        int
	// health is shared by every request using this deployment.
	health *health
}

// registry resolves public model names to deployments.
type registry struct {
	providers  map[string]providers.Provider
	models     map[string][]deployment
	strategies map[string]string
	names      []string // sorted, for /v1/models
}

// unavailable is implemented by providers that can be configured but not
// usable (an OpenAI provider whose key is not set).
type unavailable interface{ Unavailable() error }

// buildRegistry builds the providers and models of cfg. A provider whose
// settings are the same in prevCfg is taken over from prev (both nil for
// the first generation), and so is the health of its deployments. It
// returns the secrets to redact, and the providers it built anew.
func buildRegistry(cfg *config.Config, prev *registry, prevCfg *config.Config) (*registry, []string, []providers.Provider, error) {
	built := make(map[string]providers.Provider, len(cfg.Providers))
	var secrets []string
	var fresh []providers.Provider
	reused := map[string]bool{}
	for name, pc := range cfg.Providers {
		if prev != nil {
			if old, ok := prevCfg.Providers[name]; ok && reflect.DeepEqual(old, pc) {
				built[name], reused[name] = prev.providers[name], true
			}
		}
		if !reused[name] {
			p, err := buildProvider(pc)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("provider %s: %w", name, err)
			}
			built[name] = p
			fresh = append(fresh, p)
		}
		if k := pc.APIKey.Reveal(); k != "" {
			secrets = append(secrets, k)
		}
		for _, v := range pc.Headers {
			if v.Reveal() != "" {
				secrets = append(secrets, v.Reveal())
			}
		}
	}
	if p := cfg.RateLimit.Redis.Password.Reveal(); p != "" {
		secrets = append(secrets, p)
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
	r := &registry{providers: built, models: make(map[string][]deployment, len(cfg.Models)), strategies: map[string]string{}}
	for name, m := range cfg.Models {
		for _, route := range m.Routes {
			upstream := route.Model
			if upstream == "" {
				upstream = name
			}
			pc := cfg.Providers[route.Provider]
			weight := 1
			if route.Weight != nil {
				weight = *route.Weight
			}
			h := healths[[2]string{route.Provider, upstream}]
			if h == nil {
				h = &health{}
				healths[[2]string{route.Provider, upstream}] = h
			}
			r.models[name] = append(r.models[name], deployment{
				providerName: route.Provider, provider: built[route.Provider], model: upstream,
				firstTokenTimeout: pc.FirstTokenTimeout.Std(), idleTimeout: pc.IdleTimeout.Std(), streamTimeout: pc.StreamTimeout.Std(),
				weight: weight, health: h,
			})
		}
		r.strategies[name] = m.Strategy
		r.names = append(r.names, name)
	}
	sort.Strings(r.names)
	return r, secrets, fresh, nil
}

func buildProvider(pc config.Provider) (providers.Provider, error) {
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
		}
		opts.Headers = revealAll(pc.Headers)
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

// newRedactor replaces every configured secret with [REDACTED]. Errors and
// log lines go through it before they leave the process.
func newRedactor(secrets []string) *strings.Replacer {
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, config.Redacted)
	}
	return strings.NewReplacer(pairs...)
}
