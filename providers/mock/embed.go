package mock

import (
	"context"
	"hash/fnv"
	"math"
	"math/rand/v2"

	"github.com/streamgate/gateway/providers"
)

var _ providers.Embedder = (*Provider)(nil)

// EmbedDimensions is the length of the mock's vectors unless a request
// asks for another.
const EmbedDimensions = 16

// Embed returns deterministic unit vectors: the same text always gets the
// same vector, different texts different ones.
func (p *Provider) Embed(ctx context.Context, req *providers.EmbedRequest) (*providers.Embeddings, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dims := EmbedDimensions
	if req.Dimensions > 0 {
		dims = req.Dimensions
	}
	out := &providers.Embeddings{Vectors: make([][]float32, len(req.Input)), Usage: providers.Usage{PromptTokens: CountTokens(req.Input...)}}
	out.Usage.TotalTokens = out.Usage.PromptTokens
	for i, text := range req.Input {
		out.Vectors[i] = vector(text, dims)
	}
	return out, nil
}

// vector is text's deterministic unit vector of dims dimensions.
func vector(text string, dims int) []float32 {
	h := fnv.New64a()
	h.Write([]byte(text))
	r := rand.New(rand.NewPCG(h.Sum64(), 0x9e3779b97f4a7c15))
	v := make([]float32, dims)
	var norm float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		norm += x * x
	}
	norm = math.Sqrt(norm)
	for i := range v {
		v[i] = float32(float64(v[i]) / norm)
	}
	return v
}
