package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"
)

// deepSeekChunks is a DeepSeek-style thinking stream: reasoning_content,
// then the answer, then a tool call, and usage with reasoning tokens.
var deepSeekChunks = []string{
	`data: {"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"The user wants"},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":" the weather."},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"Checking.","reasoning_content":null},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,"completion_tokens_details":{"reasoning_tokens":20}}}` + "\n\ndata: [DONE]\n\n",
}

// TestReasoningRelayed: a thinking model's reasoning was dropped, so a
// client saw pings for the whole thinking phase. It is relayed as it
// arrives, on both endpoints, counted in usage, and accepted back.
func TestReasoningRelayed(t *testing.T) {
	rec, _, url := recordingUpstream(t, deepSeekChunks...)
	p, m := openAIUpstream(url, "sk-test-0123456789")
	h := newHarness(t, newConfig(p, m))

	// Chat completions, with go-openai: delta.reasoning_content.
	r := h.streamSDK(t, goopenai.ChatCompletionRequest{Model: "up-model", ReasoningEffort: "high",
		Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "weather in Paris?"}}, StreamOptions: &goopenai.StreamOptions{IncludeUsage: true}})
	if r.err != nil || r.reasoning != "The user wants the weather." || r.text != "Checking." || r.toolName != "get_weather" || r.finish != "tool_calls" {
		t.Errorf("chat: reasoning %q text %q tool %q finish %q err %v", r.reasoning, r.text, r.toolName, r.finish, r.err)
	}
	if r.usage == nil || r.usage.CompletionTokensDetails == nil || r.usage.CompletionTokensDetails.ReasoningTokens != 20 {
		t.Errorf("chat usage %+v", r.usage)
	}
	// The thinking came before the answer, each piece in its own chunk.
	var order []string
	for _, c := range r.chunks {
		if len(c.Choices) > 0 && c.Choices[0].Delta.ReasoningContent != "" {
			order = append(order, "reasoning")
		}
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			order = append(order, "content")
		}
	}
	if strings.Join(order, ",") != "reasoning,reasoning,content" {
		t.Errorf("chunk order %v", order)
	}

	// The native stream: reasoning events, then deltas, then done.
	_, _, evs := h.streamNative(t, `{"model":"up-model","prompt":"weather?"}`)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, ","); got != "connected,reasoning,reasoning,delta,done" {
		t.Errorf("native events %s", got)
	}
	if evs[1].Content != "The user wants" {
		t.Errorf("first reasoning event %+v", evs[1])
	}

	// The thinking goes back with the next turn, as DeepSeek's thinking
	// mode with tools requires; reasoning_effort was passed on.
	follow := `{"model":"up-model","stream":true,"messages":[{"role":"user","content":"weather?"},` +
		`{"role":"assistant","content":"Checking.","reasoning_content":"The user wants the weather.","tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},` +
		`{"role":"tool","tool_call_id":"call_0","content":"sunny"}]}`
	resp := h.post(t, context.Background(), "/v1/chat/completions", follow)
	drainClose(resp)
	if eff := rec.first()["reasoning_effort"]; eff != "high" {
		t.Errorf("reasoning_effort upstream %v", eff)
	}
	last := rec.last()["messages"].([]any)
	if a := last[1].(map[string]any); a["reasoning_content"] != "The user wants the weather." {
		t.Errorf("assistant turn sent upstream %v", a)
	}
}

// TestReasoningEndsTheFirstTokenPhase: a stream that failed after its
// first thinking delta is not retried (the client has seen it), exactly as
// after content.
func TestReasoningEndsTheFirstTokenPhase(t *testing.T) {
	calls, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		sseOK(w, deepSeekChunks[1], `data: {"error":{"message":"overloaded","type":"server_error","code":"overloaded"}}`+"\n\n")
	})
	p, m := openAIUpstream(url, "sk-test-0123456789")
	h := newHarness(t, newConfig(p, m))
	_, _, evs := h.streamNative(t, `{"model":"up-model","prompt":"x"}`)
	if last := evs[len(evs)-1]; calls.Load() != 1 || evs[1].Type != "reasoning" || last.Type != "error" {
		t.Errorf("calls %d, events %+v", calls.Load(), evs)
	}
	if v := h.metric(t, "gateway_time_to_first_token_seconds"); v != 1 {
		t.Errorf("time to first token observed %v times, want 1 (the thinking)", v)
	}
}

// TestMockReasons: the mock streams thinking on request, so the README and
// the playground can show it.
func TestMockReasons(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	_, _, evs := h.streamNative(t, `{"model":"mock-gpt","prompt":"[mock reasoning=3 tokens=2]"}`)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, ","); got != "connected,reasoning,reasoning,reasoning,delta,delta,done" {
		t.Errorf("events %s", got)
	}
	done := evs[len(evs)-1]
	if done.Usage.CompletionTokens != 5 {
		t.Errorf("usage %+v", done.Usage)
	}
	// On chat completions, stream false: the whole thinking in the message.
	resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"mock-gpt","messages":[{"role":"user","content":"[mock reasoning=3 tokens=2]"}]}`)
	var body struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			CompletionTokensDetails struct {
				ReasoningTokens int `json:"reasoning_tokens"`
			} `json:"completion_tokens_details"`
		} `json:"usage"`
	}
	raw := drainClose(resp)
	_ = json.Unmarshal([]byte(raw), &body)
	if !strings.Contains(raw, `"reasoning_content":"Let me think"`) || body.Usage.CompletionTokensDetails.ReasoningTokens != 3 {
		t.Errorf("stream false: %s", raw)
	}
}

// anthropicThinking is an Anthropic stream with extended thinking: a
// thinking block ending in its signature, then text and a tool use.
func anthropicThinking() []string {
	ev := func(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }
	return []string{
		ev("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":1}}}`),
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"I should look up"}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" the weather."}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}`),
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
		ev("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Let me check."}}`),
		ev("content_block_stop", `{"type":"content_block_stop","index":1}`),
		ev("content_block_start", `{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\"Paris\"}"}}`),
		ev("content_block_stop", `{"type":"content_block_stop","index":2}`),
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":40}}`),
		ev("message_stop", `{"type":"message_stop"}`),
	}
}

// TestAnthropicThinkingRelayed: Anthropic's thinking deltas were dropped,
// and its signature with them, so a follow-up with thinking was refused.
// Both reach the client on both endpoints, and come back on the next turn
// as a thinking block with the signature unchanged.
func TestAnthropicThinkingRelayed(t *testing.T) {
	const signature = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
	rec, _, url := recordingUpstream(t, anthropicThinking()...)
	h := newHarness(t, anthropicConfig(url))
	_, _, evs := h.streamNative(t, `{"model":"claude-sonnet","prompt":"weather?","reasoning_effort":"medium"}`)
	var types []string
	var sig string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, ","); got != "connected,reasoning,reasoning,reasoning,delta,done" {
		t.Errorf("native events %s", got)
	}
	_, raw, _ := h.streamNative(t, `{"model":"claude-sonnet","prompt":"weather?"}`)
	for _, f := range raw {
		if strings.Contains(f.Data, `"signature"`) {
			var e struct{ Signature string }
			_ = json.Unmarshal([]byte(f.Data), &e)
			sig = e.Signature
		}
	}
	if sig != signature {
		t.Errorf("signature relayed %q, want it unchanged", sig)
	}

	r := h.streamSDK(t, goopenai.ChatCompletionRequest{Model: "claude-sonnet", Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "weather?"}}})
	if r.reasoning != "I should look up the weather." || r.text != "Let me check." || r.toolName != "get_weather" {
		t.Errorf("chat: reasoning %q text %q tool %q", r.reasoning, r.text, r.toolName)
	}
	chatSig := h.streamedField(t, `{"model":"claude-sonnet","stream":true,"messages":[{"role":"user","content":"weather?"}]}`, "reasoning_signature")
	if chatSig != signature {
		t.Errorf("chat reasoning_signature %q", chatSig)
	}

	// The next turn carries the thinking back with its signature.
	follow := fmt.Sprintf(`{"model":"claude-sonnet","stream":true,"messages":[{"role":"user","content":"weather?"},`+
		`{"role":"assistant","content":"Let me check.","reasoning_content":"I should look up the weather.","reasoning_signature":%q,"tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},`+
		`{"role":"tool","tool_call_id":"toolu_1","content":"sunny"}]}`, signature)
	drainClose(h.post(t, context.Background(), "/v1/chat/completions", follow))
	if th, _ := rec.first()["thinking"].(map[string]any); th["type"] != "enabled" || th["budget_tokens"] != 8192.0 {
		t.Errorf("reasoning_effort medium sent as thinking %v", rec.first()["thinking"])
	}
	msgs := rec.last()["messages"].([]any)
	blocks := msgs[1].(map[string]any)["content"].([]any)
	first := blocks[0].(map[string]any)
	if first["type"] != "thinking" || first["signature"] != signature || first["thinking"] != "I should look up the weather." {
		t.Errorf("assistant turn sent upstream: %v", msgs[1])
	}
}

// TestCachedPromptTokens: a cached Claude prompt counted 7 tokens instead
// of 107 (Anthropic counts cache reads apart from input_tokens). Cached
// tokens are part of the prompt, reported in usage and metrics, from both
// providers.
func TestCachedPromptTokens(t *testing.T) {
	_, aurl := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		ev := func(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }
		sseOK(w,
			ev("message_start", `{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"c","usage":{"input_tokens":7,"cache_read_input_tokens":100,"cache_creation_input_tokens":0,"output_tokens":1}}}`),
			ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`),
			ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}`),
			ev("message_stop", `{"type":"message_stop"}`))
	})
	_, ourl := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		sseOK(w, roleChunk, helloChunk,
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1200,"completion_tokens":2,"total_tokens":1202,"prompt_tokens_details":{"cached_tokens":1024}}}`+"\n\ndata: [DONE]\n\n")
	})
	op, om := openAIUpstream(ourl, "sk-test-0123456789")
	h := newHarness(t, strings.Replace(anthropicConfig(aurl), "providers:\n", "providers:\n"+op, 1)+strings.Replace(om, "  up-model:", "  up-model:", 1))
	for _, tc := range []struct {
		model          string
		prompt, cached int
	}{{"claude-sonnet", 107, 100}, {"up-model", 1200, 1024}} {
		resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"`+tc.model+`","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`)
		var usage struct {
			PromptTokens        int `json:"prompt_tokens"`
			PromptTokensDetails struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		}
		for _, f := range newSSEReader(resp.Body).readAll(t) {
			var c struct {
				Usage *json.RawMessage `json:"usage"`
			}
			if json.Unmarshal([]byte(f.Data), &c) == nil && c.Usage != nil {
				_ = json.Unmarshal(*c.Usage, &usage)
			}
		}
		resp.Body.Close()
		if usage.PromptTokens != tc.prompt || usage.PromptTokensDetails.CachedTokens != tc.cached {
			t.Errorf("%s: usage %+v, want prompt %d with %d cached", tc.model, usage, tc.prompt, tc.cached)
		}
		if v := h.metric(t, "gateway_tokens_total", "model", tc.model, "kind", "cached_prompt"); v != float64(tc.cached) {
			t.Errorf("%s: cached_prompt tokens metric %v", tc.model, v)
		}
	}
}

// TestAnthropicRedactedThinking: a thinking block Anthropic encrypted is
// relayed whole and sent back as it came, or the next turn is refused.
func TestAnthropicRedactedThinking(t *testing.T) {
	const data = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
	ev := func(name, d string) string { return "event: " + name + "\ndata: " + d + "\n\n" }
	rec, _, url := recordingUpstream(t,
		ev("message_start", `{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"c","usage":{"input_tokens":5,"output_tokens":1}}}`),
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":"`+data+`"}}`),
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
		ev("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Done."}}`),
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}`),
		ev("message_stop", `{"type":"message_stop"}`))
	h := newHarness(t, anthropicConfig(url))
	relayed := h.streamedField(t, `{"model":"claude-sonnet","stream":true,"messages":[{"role":"user","content":"x"}]}`, "reasoning_redacted")
	if relayed != data {
		t.Errorf("relayed %q", relayed)
	}
	_, _, evs := h.streamNative(t, `{"model":"claude-sonnet","prompt":"x"}`)
	if evs[1].Type != "reasoning" {
		t.Errorf("native events %+v", evs)
	}
	drainClose(h.post(t, context.Background(), "/v1/chat/completions", `{"model":"claude-sonnet","messages":[{"role":"user","content":"x"},`+
		`{"role":"assistant","content":"Done.","reasoning_redacted":"`+data+`"},{"role":"user","content":"and?"}]}`))
	blocks := rec.last()["messages"].([]any)[1].(map[string]any)["content"].([]any)
	if b := blocks[0].(map[string]any); b["type"] != "redacted_thinking" || b["data"] != data {
		t.Errorf("sent back %v", blocks)
	}
}

// streamedField posts a streaming chat request and returns the last
// value of the string field name in its frames ("" if none had it).
func (h *harness) streamedField(t *testing.T, body, name string) string {
	t.Helper()
	resp := h.post(t, context.Background(), "/v1/chat/completions", body)
	defer resp.Body.Close()
	key, value := `"`+name+`":"`, ""
	for _, f := range newSSEReader(resp.Body).readAll(t) {
		if i := strings.Index(f.Data, key); i >= 0 {
			value = strings.SplitN(f.Data[i+len(key):], `"`, 2)[0]
		}
	}
	return value
}
