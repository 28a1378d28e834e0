package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/streamgate/gateway/config"
)

// TestRequestFieldFates: every chat-completions parameter is passed on,
// translated, or refused with a 400 naming it; none is dropped without a
// word (they were: seed, tool_choice and user never reached Anthropic).
func TestRequestFieldFates(t *testing.T) {
	arec, anthropicCalls, aurl := recordingUpstream(t, anthropicText("hi")...)
	orec, _, ourl := recordingUpstream(t, roleChunk, helloChunk, stopChunk)
	op, om := openAIUpstream(ourl, "sk-test-0123456789")
	h := newHarness(t, strings.Replace(anthropicConfig(aurl), "providers:\n", "providers:\n"+op, 1)+om)
	tools := `"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]`
	msgs := `"messages":[{"role":"user","content":"x"}]`

	// Passed on to an OpenAI-compatible upstream as sent.
	body := `{"model":"up-model","stream":true,` + msgs + `,` + tools + `,"tool_choice":"required","parallel_tool_calls":false,"seed":7,` +
		`"frequency_penalty":0.5,"presence_penalty":0.25,"logprobs":true,"top_logprobs":3,"logit_bias":{"42":-100},"store":true,` +
		`"metadata":{"team":"a"},"service_tier":"flex","verbosity":"low","safety_identifier":"u-1","user":"u","response_format":{"type":"json_object"}}`
	if resp := h.post(t, context.Background(), "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Fatalf("openai: %d %s", resp.StatusCode, drainClose(resp))
	} else {
		drainClose(resp)
	}
	o := orec.last()
	for field, want := range map[string]string{
		"tool_choice": "required", "parallel_tool_calls": "false", "seed": "7", "frequency_penalty": "0.5", "presence_penalty": "0.25",
		"logprobs": "true", "top_logprobs": "3", "logit_bias": "map[42:-100]", "store": "true", "metadata": "map[team:a]",
		"service_tier": "flex", "verbosity": "low", "safety_identifier": "u-1", "user": "u", "response_format": "map[type:json_object]",
	} {
		if v := strings.TrimSpace(fmtValue(o[field])); v != want {
			t.Errorf("openai upstream %s = %q, want %q", field, v, want)
		}
	}

	// Translated for Anthropic: tool_choice, parallel_tool_calls, user.
	body = `{"model":"claude-sonnet","stream":true,` + msgs + `,` + tools + `,"tool_choice":"required","parallel_tool_calls":false,"user":"u-9"}`
	if resp := h.post(t, context.Background(), "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Fatalf("anthropic: %d %s", resp.StatusCode, drainClose(resp))
	} else {
		drainClose(resp)
	}
	a := arec.last()
	if tc, _ := a["tool_choice"].(map[string]any); tc["type"] != "any" || tc["disable_parallel_tool_use"] != true {
		t.Errorf("anthropic tool_choice %v", a["tool_choice"])
	}
	if md, _ := a["metadata"].(map[string]any); md["user_id"] != "u-9" {
		t.Errorf("anthropic metadata %v", a["metadata"])
	}

	// Refused where the provider has no equivalent, before any upstream
	// call; refused everywhere when the gateway cannot relay it, and for
	// parameters OpenAI's API does not have.
	before := anthropicCalls.Load()
	for _, tc := range []struct{ model, extra, param, code string }{
		{"claude-sonnet", `"frequency_penalty":1`, "frequency_penalty", "unsupported_parameter"},
		{"claude-sonnet", `"seed":1`, "seed", "unsupported_parameter"},
		{"claude-sonnet", `"logprobs":true`, "logprobs", "unsupported_parameter"},
		{"claude-sonnet", `"response_format":{"type":"json_object"},` + tools, "response_format", "unsupported_parameter"},
		{"up-model", `"audio":{"voice":"alloy","format":"mp3"}`, "audio", "unsupported_parameter"},
		{"up-model", `"modalities":["text","audio"]`, "modalities", "unsupported_parameter"},
		{"up-model", `"functions":[{"name":"f"}]`, "functions", "unsupported_parameter"},
		{"up-model", `"temprature":1`, "temprature", "invalid_request"},
	} {
		resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"`+tc.model+`",`+msgs+`,`+tc.extra+`}`)
		eb := readError(t, resp)
		if resp.StatusCode != 400 || eb.Error.Code != tc.code || eb.Error.Param == nil || *eb.Error.Param != tc.param {
			t.Errorf("%s %s: %d %+v", tc.model, tc.extra, resp.StatusCode, eb.Error)
		}
	}
	if n := anthropicCalls.Load(); n != before {
		t.Errorf("refused requests reached Anthropic (%d calls)", n-before)
	}
	// modalities: ["text"] is what every request gets anyway: accepted.
	if resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"up-model",`+msgs+`,"modalities":["text"]}`); resp.StatusCode != 200 {
		t.Errorf("modalities text: %d %s", resp.StatusCode, drainClose(resp))
	} else {
		drainClose(resp)
	}
}

func fmtValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "<absent>"
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// TestAnthropicImages: image parts were dropped on the way to Anthropic;
// they become image blocks, from data URLs and from URLs.
func TestAnthropicImages(t *testing.T) {
	rec, _, url := recordingUpstream(t, anthropicText("a cat")...)
	h := newHarness(t, anthropicConfig(url), func(c *config.Config) { c.Server.MaxBodyBytes = 1 << 16 })
	body := `{"model":"claude-sonnet","messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},` +
		`{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},{"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]}]}`
	if resp := h.post(t, context.Background(), "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, drainClose(resp))
	} else {
		drainClose(resp)
	}
	content := rec.last()["messages"].([]any)[0].(map[string]any)["content"].([]any)
	if len(content) != 3 {
		t.Fatalf("content sent %v", content)
	}
	b64 := content[1].(map[string]any)["source"].(map[string]any)
	u := content[2].(map[string]any)["source"].(map[string]any)
	if b64["type"] != "base64" || b64["media_type"] != "image/png" || b64["data"] != "iVBORw0KGgo=" || u["type"] != "url" || u["url"] != "https://example.com/cat.jpg" {
		t.Errorf("image sources %v %v", b64, u)
	}
}

// TestModelOverrides: a model can drop parameters its upstream refuses
// and force others, whatever the client sent.
func TestModelOverrides(t *testing.T) {
	rec, _, url := recordingUpstream(t, roleChunk, helloChunk, stopChunk)
	p, m := openAIUpstream(url, "sk-test-0123456789")
	h := newHarness(t, newConfig(p, m+"    drop: [temperature, seed]\n    force: {reasoning_effort: low, max_tokens: 77}\n"))
	resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"up-model","messages":[{"role":"user","content":"x"}],"temperature":0.3,"seed":5,"top_p":0.9,"max_tokens":9}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, drainClose(resp))
	}
	drainClose(resp)
	b := rec.last()
	if _, ok := b["temperature"]; ok {
		t.Errorf("temperature sent: %v", b["temperature"])
	}
	if _, ok := b["seed"]; ok {
		t.Errorf("seed sent: %v", b["seed"])
	}
	if b["reasoning_effort"] != "low" || b["max_tokens"] != 77.0 || b["top_p"] != 0.9 {
		t.Errorf("forced and kept: %v", b)
	}
}

// TestAnthropicStructuredOutput: response_format (json_schema) was refused
// for Anthropic; it becomes a forced tool with the whole schema, and the
// tool's arguments stream back as the answer's text, ending with stop.
func TestAnthropicStructuredOutput(t *testing.T) {
	ev := func(name, d string) string { return "event: " + name + "\ndata: " + d + "\n\n" }
	rec, _, url := recordingUpstream(t,
		ev("message_start", `{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"c","usage":{"input_tokens":20,"output_tokens":1}}}`),
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"json_response","input":{}}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}`),
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}`),
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`),
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":8}}`),
		ev("message_stop", `{"type":"message_stop"}`))
	h := newHarness(t, anthropicConfig(url))
	r := h.streamSDK(t, goopenai.ChatCompletionRequest{Model: "claude-sonnet",
		Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "where?"}},
		ResponseFormat: &goopenai.ChatCompletionResponseFormat{Type: goopenai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &goopenai.ChatCompletionResponseFormatJSONSchema{Name: "place", Strict: true,
				Schema: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}`)}}})
	if r.err != nil || r.text != `{"city": "Paris"}` || r.finish != "stop" || r.toolName != "" {
		t.Errorf("text %q finish %q tool %q err %v", r.text, r.finish, r.toolName, r.err)
	}
	b := rec.last()
	tool := b["tools"].([]any)[0].(map[string]any)
	schema := tool["input_schema"].(map[string]any)
	if tool["name"] != "json_response" || schema["additionalProperties"] != false || schema["required"] == nil {
		t.Errorf("tool sent %v", tool)
	}
	if tc := b["tool_choice"].(map[string]any); tc["type"] != "tool" || tc["name"] != "json_response" {
		t.Errorf("tool_choice %v", tc)
	}
}

// TestAnthropicCacheControl: cache_control marks (as LiteLLM-style
// clients put them on messages, content parts and tools) reach Anthropic
// on the blocks they mark; a malformed one is refused by name.
func TestAnthropicCacheControl(t *testing.T) {
	rec, _, url := recordingUpstream(t, anthropicText("ok")...)
	h := newHarness(t, anthropicConfig(url))
	body := `{"model":"claude-sonnet","messages":[` +
		`{"role":"system","content":"a long system prompt","cache_control":{"type":"ephemeral"}},` +
		`{"role":"user","content":[{"type":"text","text":"a long document","cache_control":{"type":"ephemeral","ttl":"1h"}},{"type":"text","text":"the question"}]}],` +
		`"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}},"cache_control":{"type":"ephemeral"}}]}`
	if resp := h.post(t, context.Background(), "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, drainClose(resp))
	} else {
		drainClose(resp)
	}
	b := rec.last()
	system := b["system"].([]any)[0].(map[string]any)
	user := b["messages"].([]any)[0].(map[string]any)["content"].([]any)
	tool := b["tools"].([]any)[0].(map[string]any)
	mark := func(v any) string { m, _ := v.(map[string]any); return fmt.Sprintf("%v %v", m["type"], m["ttl"]) }
	if mark(system["cache_control"]) != "ephemeral <nil>" || mark(user[0].(map[string]any)["cache_control"]) != "ephemeral 1h" ||
		user[1].(map[string]any)["cache_control"] != nil || mark(tool["cache_control"]) != "ephemeral <nil>" || tool["input_schema"] == nil {
		t.Errorf("system %v, user %v, tool %v", system, user, tool)
	}
	resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"claude-sonnet","messages":[{"role":"user","content":"x","cache_control":{"type":"forever"}}]}`)
	if eb := readError(t, resp); resp.StatusCode != 400 || eb.Error.Param == nil || *eb.Error.Param != "messages.cache_control" {
		t.Errorf("bad mark: %d %+v", resp.StatusCode, eb.Error)
	}
}
