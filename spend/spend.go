// Package spend prices what a request used: dollars per million tokens of
// each kind, from the config or a bundled table of common models, and the
// cost of one call's usage.
package spend

import (
	"strings"

	"github.com/streamgate/gateway/providers"
)

// Price is what a model charges, in US dollars per million tokens.
type Price struct {
	Input float64 `yaml:"input" json:"input"`
	// CachedInput is charged for prompt tokens read from the upstream's
	// prompt cache (default: Input).
	CachedInput *float64 `yaml:"cached_input" json:"cached_input,omitempty"`
	// CacheWrite is charged for prompt tokens written to it, Anthropic's
	// cache_creation_input_tokens (default: Input).
	CacheWrite *float64 `yaml:"cache_write" json:"cache_write,omitempty"`
	Output     float64  `yaml:"output" json:"output"`
	// Reasoning is charged for completion tokens spent thinking
	// (default: Output, as every provider bills them today).
	Reasoning *float64 `yaml:"reasoning" json:"reasoning,omitempty"`
}

func or(p *float64, d float64) float64 {
	if p != nil {
		return *p
	}
	return d
}

// Cost is what u costs at p, in dollars. Cached and cache-write tokens
// are part of the prompt's count, reasoning tokens part of the
// completion's, as providers.Usage counts them.
func (p *Price) Cost(u *providers.Usage) float64 {
	cached, written := max(u.CachedTokens, 0), max(u.CacheWriteTokens, 0)
	plain := max(u.PromptTokens-cached-written, 0)
	reasoning := min(max(u.ReasoningTokens, 0), max(u.CompletionTokens, 0))
	answer := max(u.CompletionTokens-reasoning, 0)
	return (float64(plain)*p.Input +
		float64(cached)*or(p.CachedInput, p.Input) +
		float64(written)*or(p.CacheWrite, p.Input) +
		float64(answer)*p.Output +
		float64(reasoning)*or(p.Reasoning, p.Output)) / 1e6
}

// Highest is p's highest price of a prompt token (plain, cached or
// written to the cache) and of a completion token (answer or
// reasoning), per million: what a request is charged at worst.
func (p *Price) Highest() (prompt, completion float64) {
	return max(p.Input, or(p.CachedInput, p.Input), or(p.CacheWrite, p.Input)), max(p.Output, or(p.Reasoning, p.Output))
}

// Pricer is an optional interface of a stream, for streams that know the
// price of the deployment answering them.
type Pricer interface {
	// Price is the price of the deployment that answered, or nil when
	// none is known.
	Price() *Price
}

// Bundled returns the bundled price of an upstream model, matched by its
// name or, for a dated or suffixed name (gpt-4o-2024-08-06,
// claude-sonnet-4-5-20250929), by the longest name it begins with; nil
// when the table has none.
func Bundled(model string) *Price {
	model = strings.ToLower(model)
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		model = model[i+1:] // openai/gpt-4o on OpenRouter
	}
	best := ""
	for name := range bundled {
		if (model == name || strings.HasPrefix(model, name+"-")) && len(name) > len(best) {
			best = name
		}
	}
	if best == "" {
		return nil
	}
	p := bundled[best]
	return &p
}

func f(v float64) *float64 { return &v }

// bundled are list prices in US dollars per million tokens, as published
// by OpenAI and Anthropic for their standard tier (Anthropic's cache
// write at its 5-minute rate). Config prices override them; check them
// against your contract.
var bundled = map[string]Price{
	// OpenAI
	"gpt-5":        {Input: 1.25, CachedInput: f(0.125), Output: 10},
	"gpt-5-mini":   {Input: 0.25, CachedInput: f(0.025), Output: 2},
	"gpt-5-nano":   {Input: 0.05, CachedInput: f(0.005), Output: 0.40},
	"gpt-4.1":      {Input: 2, CachedInput: f(0.50), Output: 8},
	"gpt-4.1-mini": {Input: 0.40, CachedInput: f(0.10), Output: 1.60},
	"gpt-4.1-nano": {Input: 0.10, CachedInput: f(0.025), Output: 0.40},
	"gpt-4o":       {Input: 2.50, CachedInput: f(1.25), Output: 10},
	"gpt-4o-mini":  {Input: 0.15, CachedInput: f(0.075), Output: 0.60},
	"o3":           {Input: 2, CachedInput: f(0.50), Output: 8},
	"o3-mini":      {Input: 1.10, CachedInput: f(0.55), Output: 4.40},
	"o4-mini":      {Input: 1.10, CachedInput: f(0.275), Output: 4.40},
	"o1":           {Input: 15, CachedInput: f(7.50), Output: 60},
	// Anthropic
	"claude-opus-4-1":   {Input: 15, CachedInput: f(1.50), CacheWrite: f(18.75), Output: 75},
	"claude-opus-4":     {Input: 15, CachedInput: f(1.50), CacheWrite: f(18.75), Output: 75},
	"claude-sonnet-4-5": {Input: 3, CachedInput: f(0.30), CacheWrite: f(3.75), Output: 15},
	"claude-sonnet-4":   {Input: 3, CachedInput: f(0.30), CacheWrite: f(3.75), Output: 15},
	"claude-3-7-sonnet": {Input: 3, CachedInput: f(0.30), CacheWrite: f(3.75), Output: 15},
	"claude-haiku-4-5":  {Input: 1, CachedInput: f(0.10), CacheWrite: f(1.25), Output: 5},
	"claude-3-5-haiku":  {Input: 0.80, CachedInput: f(0.08), CacheWrite: f(1), Output: 4},
	// Embeddings (input only)
	"text-embedding-3-small": {Input: 0.02},
	"text-embedding-3-large": {Input: 0.13},
}
