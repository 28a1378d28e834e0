package gateway

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"
)

func anthropicConfig(url string) string {
	return newConfig(fmt.Sprintf(`  claude:
    type: anthropic
    base_url: %s
    api_key: sk-ant-test-key
`, url), `  claude-sonnet:
    routes:
      - provider: claude
        model: claude-sonnet-4-5
`)
}

func TestAnthropicStreamWithToolCall(t *testing.T) {
	recorded, err := os.ReadFile("testdata/anthropic_toolcall.sse")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	var path, key, version string
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		path, key, version = r.URL.Path, r.Header.Get("X-Api-Key"), r.Header.Get("Anthropic-Version")
		_ = decodeBody(r, &got)
		sseOK(w, strings.SplitAfter(string(recorded), "\n\n")...)
	})
	h := newHarness(t, anthropicConfig(url))

	r := h.streamSDK(t, goopenai.ChatCompletionRequest{
		Model: "claude-sonnet",
		Messages: []goopenai.ChatCompletionMessage{
			{Role: "system", Content: "be brief"},
			{Role: "user", Content: "weather in Paris?"},
		},
		Tools: []goopenai.Tool{{Type: goopenai.ToolTypeFunction, Function: &goopenai.FunctionDefinition{
			Name: "get_weather", Description: "weather by city",
			Parameters: map[string]any{"type": "object", "properties": map[string]any{"location": map[string]any{"type": "string"}}, "required": []string{"location"}},
		}}},
		StreamOptions: &goopenai.StreamOptions{IncludeUsage: true},
	})
	if r.err != nil {
		t.Fatal(r.err)
	}
	text, id, name, args, finish, usage := r.text, r.toolID, r.toolName, r.toolArgs, r.finish, r.usage

	if path != "/v1/messages" || key != "sk-ant-test-key" || version == "" {
		t.Errorf("upstream request %s, key %q, version %q", path, key, version)
	}
	if got["model"] != "claude-sonnet-4-5" || got["stream"] != true || got["max_tokens"] != 4096.0 {
		t.Errorf("upstream body %v", got)
	}
	if sys, _ := got["system"].([]any); len(sys) != 1 {
		t.Errorf("system not sent as a system block: %v", got["system"])
	}
	if tools, _ := got["tools"].([]any); len(tools) != 1 || !strings.Contains(fmt.Sprint(tools[0]), "input_schema") {
		t.Errorf("tools %v", got["tools"])
	}
	if text != "Let me check the weather." || id != "toolu_01T1x1fJ34qAmk2tNTrN7Up6" || name != "get_weather" || args != `{"location": "Paris"}` || finish != "tool_calls" {
		t.Errorf("relayed: text %q id %q name %q args %q finish %q", text, id, name, args, finish)
	}
	if usage == nil || usage.PromptTokens != 472 || usage.CompletionTokens != 89 || usage.TotalTokens != 561 {
		t.Errorf("usage %+v", usage)
	}

	// The native endpoint: text as deltas, then done with the usage.
	_, _, evs := h.streamNative(t, `{"model":"claude-sonnet","prompt":"weather?"}`)
	done := evs[len(evs)-1]
	if evs[0].Provider != "claude" || evs[1].Content != "Let me check" || done.Type != "done" || done.FinishReason != "tool_calls" || done.Usage.TotalTokens != 561 || done.UsageEstimated {
		t.Errorf("native events %+v, done %+v", evs, done)
	}
}

func TestAnthropicErrors(t *testing.T) {
	calls, url := countingUpstream(t, func(n int32, w http.ResponseWriter, r *http.Request) {
		if n == 1 { // overloaded before the stream: retried
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(529)
			fmt.Fprint(w, `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)
			return
		}
		sseOK(w,
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n",
			"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
	})
	h := newHarness(t, anthropicConfig(url))
	_, _, evs := h.streamNative(t, `{"model":"claude-sonnet","prompt":"hi"}`)
	last := evs[len(evs)-1]
	if calls.Load() != 2 || evs[1].Content != "partial" || last.Type != "error" || last.Error.Code != "overloaded_error" {
		t.Errorf("calls %d, events %+v, last error %+v", calls.Load(), evs, last.Error)
	}
}

// TestAnthropicPauseTurnIsNotStop: a paused turn (a long server-tool turn
// the client must send back to continue) was reported as finished.
func TestAnthropicPauseTurnIsNotStop(t *testing.T) {
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		sseOK(w,
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Searching\"}}\n\n",
			"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"pause_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
	})
	h := newHarness(t, anthropicConfig(url))
	_, _, evs := h.streamNative(t, `{"model":"claude-sonnet","prompt":"search the web"}`)
	if done := evs[len(evs)-1]; done.Type != "done" || done.FinishReason != "pause_turn" {
		t.Errorf("ended %+v, want done with finish_reason pause_turn", done)
	}
}
