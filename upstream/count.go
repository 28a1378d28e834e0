package upstream

import (
	"context"
	"errors"

	"github.com/streamgate/gateway/providers"
)

// errCannotCount is CountTokens's answer for a model none of whose
// providers counts tokens.
var errCannotCount = errors.New("no provider of this model counts tokens")

// CountTokens counts req's input tokens with the first of model's
// deployments whose provider counts tokens (providers.TokenCounter), in
// the order of the model's strategy, moving on while attempts fail for
// reasons worth another (Retryable). It fails with errCannotCount when
// no provider counts; the caller then estimates.
func (r *Registry) CountTokens(ctx context.Context, req *providers.Request, model string) (int, Attempt, error) {
	var a Attempt
	lastErr := errCannotCount
	for _, dep := range order(r.models[model], r.strategies[model], r.opts.Now()) {
		tc, ok := dep.provider.(providers.TokenCounter)
		if !ok || providers.Unusable(dep.provider) != nil {
			continue
		}
		a.Attempts++
		a.Provider = dep.providerName
		req.Model = dep.model
		n, err := tc.CountTokens(ctx, req)
		if err == nil {
			return n, a, nil
		}
		if errors.Is(err, errors.ErrUnsupported) {
			a.Attempts--
			continue
		}
		lastErr = err
		if ctx.Err() != nil || !Retryable(err) || a.Attempts >= r.retry.MaxAttempts {
			break
		}
	}
	return 0, a, lastErr
}
