package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"
)

// legacyChunks is a text_completion stream as OpenAI and vLLM send it.
var legacyChunks = []string{
	`data: {"id":"cmpl-1","object":"text_completion","created":1,"choices":[{"text":"(x):","index":0,"logprobs":null,"finish_reason":null}],"model":"m"}` + "\n\n",
	`data: {"id":"cmpl-1","object":"text_completion","created":1,"choices":[{"text":" return x","index":0,"logprobs":null,"finish_reason":"stop"}],"model":"m"}` + "\n\n",
	`data: {"id":"cmpl-1","object":"text_completion","created":1,"choices":[],"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}` + "\n\ndata: [DONE]\n\n",
}

// TestLegacyCompletions: POST /v1/completions passes the raw prompt (and
// suffix) to the upstream's /completions, no chat template, and relays
// its text chunks; streamed and whole, with go-openai as the client.
func TestLegacyCompletions(t *testing.T) {
	rec, _, url := recordingUpstream(t, legacyChunks...)
	p, m := openAIUpstream(url, "sk-test-0123456789")
	h := newHarness(t, newConfig(p, m))
	st, err := h.sdk().CreateCompletionStream(context.Background(), goopenai.CompletionRequest{Model: "up-model", Prompt: "def f", Suffix: "\n", MaxTokens: 16,
		StreamOptions: &goopenai.StreamOptions{IncludeUsage: true}})
	if err != nil {
		t.Fatal(err)
	}
	var text string
	var usage goopenai.Usage
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Choices) > 0 {
			text += r.Choices[0].Text
		}
		if r.Usage != nil {
			usage = *r.Usage
		}
	}
	st.Close()
	if text != "(x): return x" || usage.TotalTokens != 7 {
		t.Errorf("streamed %q, usage %+v", text, usage)
	}
	b := rec.last()
	if b["prompt"] != "def f" || b["suffix"] != "\n" || b["messages"] != nil || b["model"] != "gpt-4o-mini" {
		t.Errorf("upstream got %v", b)
	}

	resp, err := h.sdk().CreateCompletion(context.Background(), goopenai.CompletionRequest{Model: "up-model", Prompt: "def f", MaxTokens: 16})
	if err != nil || len(resp.Choices) != 1 || resp.Choices[0].Text != "(x): return x" || resp.Choices[0].FinishReason != "stop" || resp.Usage.TotalTokens != 7 {
		t.Errorf("whole: %+v %v", resp, err)
	}
}

// TestLegacyCompletionFaults: a cut legacy stream ends with an error
// object and never [DONE]; parameters the gateway cannot honour are
// refused by name.
func TestLegacyCompletionFaults(t *testing.T) {
	_, _, url := recordingUpstream(t, legacyChunks[0]) // cut: no finish, no [DONE]
	p, m := openAIUpstream(url, "sk-test-0123456789")
	h := newHarness(t, newConfig(p, m))
	resp := h.post(t, context.Background(), "/v1/completions", `{"model":"up-model","prompt":"def f","stream":true}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, drainClose(resp))
	}
	frames := newSSEReader(resp.Body).readAll(t)
	resp.Body.Close()
	if len(frames) == 0 {
		t.Fatal("no frames")
	}
	last := frames[len(frames)-1].Data
	if !strings.Contains(last, `"code":"upstream_truncated"`) || strings.Contains(strings.Join(framesData(frames), "\n"), "[DONE]") {
		t.Errorf("frames %v", framesData(frames))
	}
	for _, tc := range []struct{ extra, param string }{
		{`"n":2`, "n"}, {`"echo":true`, "echo"}, {`"best_of":3`, "best_of"}, {`"logprobs":2`, "logprobs"},
	} {
		resp := h.post(t, context.Background(), "/v1/completions", `{"model":"up-model","prompt":"x",`+tc.extra+`}`)
		if eb := readError(t, resp); resp.StatusCode != 400 || eb.Error.Param == nil || *eb.Error.Param != tc.param {
			t.Errorf("%s: %d %+v", tc.extra, resp.StatusCode, eb.Error)
		}
	}
	// The mock completes raw prompts too; Anthropic has no raw
	// completion and says so.
	hm := newHarness(t, newConfig("", ""))
	body := drainClose(hm.post(t, context.Background(), "/v1/completions", `{"model":"mock-gpt","prompt":"[mock tokens=3]"}`))
	if !strings.Contains(body, `"text":"This is a"`) {
		t.Errorf("mock: %s", body)
	}
	_, aurl := countingUpstream(t, func(int32, http.ResponseWriter, *http.Request) {})
	ha := newHarness(t, anthropicConfig(aurl))
	resp = ha.post(t, context.Background(), "/v1/completions", `{"model":"claude-sonnet","prompt":"x"}`)
	if eb := readError(t, resp); resp.StatusCode != 400 || eb.Error.Param == nil || *eb.Error.Param != "prompt" {
		t.Errorf("anthropic: %d %+v", resp.StatusCode, eb.Error)
	}
}

func framesData(frames []sseEvent) []string {
	var out []string
	for _, f := range frames {
		out = append(out, f.Data)
	}
	return out
}

// TestLegacyCompletionLimits: legacy completions are admitted like any
// other request: past the token budget, 429 with Retry-After.
func TestLegacyCompletionLimits(t *testing.T) {
	h := newHarness(t, newConfig("", "")+"rate_limit:\n  defaults:\n    tokens_per_minute: 50\n")
	resp := h.post(t, context.Background(), "/v1/completions", `{"model":"mock-gpt","prompt":"x","max_tokens":500}`)
	if eb := readError(t, resp); resp.StatusCode != 429 || eb.Error.Code != "tokens_rate_limit_exceeded" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("%d %+v", resp.StatusCode, eb.Error)
	}
}
