package upstream

import (
	"context"
	"net/http"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// errCannotEmbed: none of a model's routes goes to a provider that
// computes embeddings.
var errCannotEmbed = failure.Define(http.StatusBadRequest, failure.TypeInvalidRequest, "model_cannot_embed",
	"this model is not served by a provider that computes embeddings")

// Embed computes embeddings with model's routes, in the order of its
// strategy: a failure worth retrying (connection, 429, 5xx) moves on to
// the next route, as a stream's first attempt does. Routes to providers
// without embeddings are passed over.
func (r *Registry) Embed(ctx context.Context, req *providers.EmbedRequest, model, requestID string) (*providers.Embeddings, Attempt, error) {
	var a Attempt
	lastErr := error(errCannotEmbed)
	for i, dep := range order(r.models[model], r.strategies[model], r.opts.Now()) {
		e, ok := dep.provider.(providers.Embedder)
		if !ok {
			continue
		}
		if a.Attempts > 0 {
			a.Fallbacks++
			r.opts.Observer.FellBack(model)
		}
		a.Attempts++
		a.Provider, a.Deployment, a.Price, a.System = dep.providerName, dep.model, dep.price, dep.system
		req.Model = dep.model
		actx, span := startAttempt(ctx, "embeddings", dep, a.Attempts)
		out, err := e.Embed(actx, req)
		endAttempt(ctx, span, err)
		if err == nil {
			dep.health.success(0)
			return out, a, nil
		}
		lastErr = err
		r.failed(ctx, dep, err)
		if ctx.Err() != nil || !Retryable(err) || a.Attempts >= r.retry.MaxAttempts {
			break
		}
		r.opts.Log.Debug("embedding attempt failed", "request_id", requestID, "provider", dep.providerName, "route", i, "error", r.opts.Redact(err.Error()))
	}
	return nil, a, lastErr
}
