package gateway

import (
	"fmt"
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

func buildRegistry(cfg *config.Config) (*registry, []string, error) {
	built := make(map[string]providers.Provider, len(cfg.Providers))
	var secrets []string
	for name, pc := range cfg.Providers {
		p, err := buildProvider(pc)
		if err != nil {
			return nil, nil, fmt.Errorf("provider %s: %w", name, err)
		}
		built[name] = p
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
			r.models[name] = append(r.models[name], deployment{
				providerName: route.Provider, provider: built[route.Provider], model: upstream,
				firstTokenTimeout: pc.FirstTokenTimeout.Std(), idleTimeout: pc.IdleTimeout.Std(), streamTimeout: pc.StreamTimeout.Std(),
				weight: weight, health: &health{},
			})
		}
		r.strategies[name] = m.Strategy
		r.names = append(r.names, name)
	}
	sort.Strings(r.names)
	return r, secrets, nil
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
