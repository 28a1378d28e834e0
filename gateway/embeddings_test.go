package gateway

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"
)

// TestEmbeddingsMock: the mock returns deterministic unit vectors, through
// the official client, in both encodings.
func TestEmbeddingsMock(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	resp, err := h.sdk().CreateEmbeddings(context.Background(), goopenai.EmbeddingRequestStrings{Model: "mock-gpt", Input: []string{"hello world", "other", "hello world"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Data) != 3 || len(resp.Data[0].Embedding) != 16 || resp.Usage.PromptTokens != 5 {
		t.Fatalf("embeddings %d, dims %d, usage %+v", len(resp.Data), len(resp.Data[0].Embedding), resp.Usage)
	}
	a, b, same := resp.Data[0].Embedding, resp.Data[1].Embedding, resp.Data[2].Embedding
	var norm float64
	for i := range a {
		norm += float64(a[i]) * float64(a[i])
		if a[i] != same[i] {
			t.Fatal("the same text got two vectors")
		}
	}
	if math.Abs(norm-1) > 1e-5 || fmt.Sprint(a) == fmt.Sprint(b) {
		t.Errorf("norm %v; different texts equal: %v", norm, fmt.Sprint(a) == fmt.Sprint(b))
	}
	// dimensions, and base64 (little-endian float32s) as OpenAI encodes.
	body := drainClose(h.post(t, context.Background(), "/v1/embeddings", `{"model":"mock-gpt","input":"hello world","dimensions":8,"encoding_format":"base64"}`))
	i := strings.Index(body, `"embedding":"`)
	if i < 0 {
		t.Fatalf("no base64 embedding: %s", body)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.SplitN(body[i+len(`"embedding":"`):], `"`, 2)[0])
	if err != nil || len(raw) != 32 {
		t.Fatalf("base64: %d bytes, %v", len(raw), err)
	}
	if f := math.Float32frombits(binary.LittleEndian.Uint32(raw)); f == 0 {
		t.Errorf("first float %v", f)
	}
}

// TestEmbeddingsRouted: an OpenAI-compatible upstream gets the request
// under the route's model; a failing first route falls back; limits and
// errors are the gateway's as for chat.
func TestEmbeddingsRouted(t *testing.T) {
	embedOK := func(w http.ResponseWriter, model string) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.6,0.8]}],"model":%q,"usage":{"prompt_tokens":3,"total_tokens":3}}`, model)
	}
	down, url1 := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) { http.Error(w, "overloaded", 503) })
	var gotModel, gotPath string
	var gotFormat string
	_, url2 := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.Path
		var b map[string]any
		_ = decodeBody(r, &b)
		gotModel, gotFormat = fmt.Sprint(b["model"]), fmt.Sprint(b["encoding_format"])
		embedOK(w, gotModel)
	})
	cfg := strings.Replace(routesConfig(url1, url2, ""), "resilient:", "embed:", 1)
	h := newHarness(t, cfg+"rate_limit:\n  defaults:\n    tokens_per_minute: 100\n")
	resp, err := h.sdk().CreateEmbeddings(context.Background(), goopenai.EmbeddingRequestStrings{Model: "embed", Input: []string{"abc"}})
	if err != nil || len(resp.Data) != 1 || resp.Data[0].Embedding[1] != 0.8 || resp.Usage.PromptTokens != 3 {
		t.Fatalf("%+v %v", resp, err)
	}
	if down.Load() != 1 || gotPath != "/v1/embeddings" || gotModel != "embed" || gotFormat != "float" {
		t.Errorf("first route called %d times; second got %s with model %q, format %q", down.Load(), gotPath, gotModel, gotFormat)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"model":"embed","input":"` + strings.Repeat("word ", 200) + `"}`, 429, "tokens_rate_limit_exceeded"},
		{`{"model":"embed"}`, 400, "missing_input"},
		{`{"model":"embed","input":[[1,2,3]]}`, 400, "invalid_type"},
		{`{"model":"embed","input":"x","dimensions":0}`, 400, "invalid_value"},
		{`{"model":"nope","input":"x"}`, 404, "model_not_found"},
	} {
		resp := h.post(t, context.Background(), "/v1/embeddings", tc.body)
		if eb := readError(t, resp); resp.StatusCode != tc.status || eb.Error.Code != tc.code {
			t.Errorf("%.60s: %d %+v", tc.body, resp.StatusCode, eb.Error)
		}
	}
}

// TestEmbeddingsNeedAnEmbedder: a model served only by a provider without
// embeddings says so.
func TestEmbeddingsNeedAnEmbedder(t *testing.T) {
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {})
	h := newHarness(t, anthropicConfig(url))
	resp := h.post(t, context.Background(), "/v1/embeddings", `{"model":"claude-sonnet","input":"x"}`)
	if eb := readError(t, resp); resp.StatusCode != 400 || eb.Error.Code != "model_cannot_embed" {
		t.Errorf("%d %+v", resp.StatusCode, eb.Error)
	}
}
