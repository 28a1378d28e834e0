package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/streamgate/gateway/config"
)

// anthropicClient is Anthropic's official Go SDK pointed at the gateway
// by its base URL alone, as Claude Code is by ANTHROPIC_BASE_URL.
func (h *harness) anthropicClient(key string, opts ...option.RequestOption) sdk.Client {
	return sdk.NewClient(append([]option.RequestOption{
		option.WithBaseURL(h.http.URL + "/"), option.WithAPIKey(key), option.WithMaxRetries(0),
	}, opts...)...)
}

// rawBodies keeps the raw bodies of the requests an upstream received,
// with their headers.
type rawBodies struct {
	mu      sync.Mutex
	bodies  [][]byte
	headers []http.Header
	paths   []string
}

func (r *rawBodies) add(req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies, r.headers, r.paths = append(r.bodies, b), append(r.headers, req.Header.Clone()), append(r.paths, req.URL.Path)
}

func (r *rawBodies) get(i int) (map[string]any, http.Header, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var m map[string]any
	_ = json.Unmarshal(r.bodies[i], &m)
	return m, r.headers[i], r.paths[i]
}

// anthropicFake answers every Messages request with the recorded stream
// in file, byte for byte, and count_tokens with 42.
func anthropicFake(t *testing.T, file string) (*rawBodies, string) {
	t.Helper()
	recorded, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rec := &rawBodies{}
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		if r.URL.Path == "/v1/messages/count_tokens" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"input_tokens":42}`)
			return
		}
		sseOK(w, strings.SplitAfter(string(recorded), "\n\n")...)
	})
	return rec, url
}

// captureBody is SDK middleware that keeps the body the client sent.
func captureBody(into *[]byte) option.RequestOption {
	return option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if r.Body != nil {
			b, _ := io.ReadAll(r.Body)
			*into = b
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		return next(r)
	})
}

// TestMessagesPassThroughThinking: to an Anthropic upstream, the client's
// request arrives as sent (cache_control, thinking, system blocks) with
// only the model routed, and the upstream's events come back verbatim:
// the thinking block's signature, which the next turn must send back
// unchanged, included.
func TestMessagesPassThroughThinking(t *testing.T) {
	rec, url := anthropicFake(t, "testdata/anthropic_thinking.sse")
	h := newHarness(t, anthropicConfig(url))
	var sent []byte
	client := h.anthropicClient("unused", captureBody(&sent), option.WithHeader("anthropic-beta", "interleaved-thinking-2025-05-14"))

	cc := sdk.NewCacheControlEphemeralParam()
	cc.TTL = sdk.CacheControlEphemeralTTLTTL1h
	user := sdk.TextBlockParam{Text: "What is 27 * 453?", CacheControl: cc}
	st := client.Messages.NewStreaming(context.Background(), sdk.MessageNewParams{
		Model: "claude-sonnet", MaxTokens: 4096,
		System:   []sdk.TextBlockParam{{Text: "You are exact.", CacheControl: sdk.NewCacheControlEphemeralParam()}},
		Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.ContentBlockParamUnion{OfText: &user})},
		Thinking: sdk.ThinkingConfigParamOfEnabled(2048),
	})
	var msg sdk.Message
	for st.Next() {
		if err := msg.Accumulate(st.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	if len(msg.Content) != 2 {
		t.Fatalf("content %+v", msg.Content)
	}
	th, text := msg.Content[0], msg.Content[1]
	if th.Type != "thinking" || th.Signature != "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds/4eCZgFAXBVXgsMm+RPhdhuzhJl/Gy4bJOVBZAXKTk=" ||
		!strings.HasPrefix(th.Thinking, "Let me solve") || !strings.HasSuffix(th.Thinking, "50 + 3") {
		t.Errorf("thinking block %+v", th)
	}
	if text.Text != "27 * 453 = **12,231**" || msg.StopReason != "end_turn" || msg.Usage.OutputTokens != 89 || msg.Usage.CacheReadInputTokens != 2048 {
		t.Errorf("message %+v", msg)
	}

	got, hdr, path := rec.get(0)
	var want map[string]any
	if err := json.Unmarshal(sent, &want); err != nil {
		t.Fatal(err)
	}
	if path != "/v1/messages" || got["model"] != "claude-sonnet-4-5" || got["stream"] != true {
		t.Errorf("upstream got %s model %v stream %v", path, got["model"], got["stream"])
	}
	for _, field := range []string{"system", "messages", "thinking", "max_tokens"} {
		if !reflect.DeepEqual(got[field], want[field]) {
			t.Errorf("%s: upstream got %v, client sent %v", field, got[field], want[field])
		}
	}
	if b := hdr.Get("Anthropic-Beta"); b != "interleaved-thinking-2025-05-14" {
		t.Errorf("anthropic-beta %q not passed on", b)
	}
	if k := hdr.Get("X-Api-Key"); k != "sk-ant-test-key" {
		t.Errorf("upstream key %q: the provider's, not the client's, must go upstream", k)
	}
}

// TestMessagesWireVerbatim: every event of an Anthropic upstream reaches
// the client byte for byte but its pings (the gateway sends its own) and
// message_stop (the gateway's, after a complete answer only).
func TestMessagesWireVerbatim(t *testing.T) {
	_, url := anthropicFake(t, "testdata/anthropic_toolcall.sse")
	h := newHarness(t, anthropicConfig(url))
	resp := h.post(t, context.Background(), "/v1/messages", `{"model":"claude-sonnet","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"weather?"}]}`)
	defer resp.Body.Close()
	got := newSSEReader(resp.Body).readAll(t)
	recorded, _ := os.ReadFile("testdata/anthropic_toolcall.sse")
	var want []sseEvent
	for _, f := range strings.SplitAfter(string(recorded), "\n\n") {
		if ev, err := newSSEReader(strings.NewReader(f)).next(); err == nil && ev.Event != "ping" {
			want = append(want, ev)
		}
	}
	if want[len(want)-1].Event != "message_stop" {
		t.Fatal("fixture does not end with message_stop")
	}
	want[len(want)-1].Data = `{"type":"message_stop"}`
	if !reflect.DeepEqual(got, want) {
		t.Errorf("relayed\n%v\nwant\n%v", got, want)
	}
}

// TestMessagesWholeAnswerPassThrough: stream=false from an Anthropic
// upstream is the message its events add up to, blocks as it sent them.
func TestMessagesWholeAnswerPassThrough(t *testing.T) {
	_, url := anthropicFake(t, "testdata/anthropic_toolcall.sse")
	h := newHarness(t, anthropicConfig(url))
	client := h.anthropicClient("k")
	msg, err := client.Messages.New(context.Background(), sdk.MessageNewParams{
		Model: "claude-sonnet", MaxTokens: 100, Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("weather?"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Content) != 2 || msg.Content[0].Text != "Let me check the weather." || msg.Content[1].Type != "tool_use" ||
		msg.Content[1].Name != "get_weather" || string(msg.Content[1].Input) != `{"location": "Paris"}` ||
		msg.StopReason != "tool_use" || msg.Usage.InputTokens != 472 || msg.Usage.OutputTokens != 89 {
		t.Errorf("message %s", msg.RawJSON())
	}
}

// TestMessagesToolRoundTripTranslated: through an OpenAI-compatible
// upstream, a tool call streams as a tool_use block the SDK accumulates,
// and the next turn's tool_result reaches the upstream as a tool message.
func TestMessagesToolRoundTripTranslated(t *testing.T) {
	rec, url := toolRoundTripUpstream(t)
	p, m := openAIUpstream(url, "sk-up")
	h := newHarness(t, newConfig(p, m))
	client := h.anthropicClient("k")
	ctx := context.Background()
	tools := []sdk.ToolUnionParam{{OfTool: &sdk.ToolParam{Name: "get_weather", Description: sdk.String("weather by city"),
		InputSchema: sdk.ToolInputSchemaParam{Properties: map[string]any{"location": map[string]any{"type": "string"}}, Required: []string{"location"}}}}}
	turn := []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("weather in Paris?"))}

	st := client.Messages.NewStreaming(ctx, sdk.MessageNewParams{Model: "up-model", MaxTokens: 300, Messages: turn, Tools: tools,
		ToolChoice: sdk.ToolChoiceUnionParam{OfAuto: &sdk.ToolChoiceAutoParam{DisableParallelToolUse: sdk.Bool(true)}}})
	var msg sdk.Message
	for st.Next() {
		if err := msg.Accumulate(st.Current()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if msg.StopReason != "tool_use" || len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" || msg.Content[0].ID != "call_Vx3kP" ||
		msg.Content[0].Name != "get_weather" || string(msg.Content[0].Input) != `{"location":"Paris"}` || msg.Usage.InputTokens != 80 || msg.Usage.OutputTokens != 17 {
		t.Fatalf("message %s", msg.RawJSON())
	}
	first, _, _ := rec.get(0)
	if fmt.Sprint(first["tools"]) == "" || first["parallel_tool_calls"] != false || first["tool_choice"] != "auto" {
		t.Errorf("upstream request %v", first)
	}

	turn = append(turn, msg.ToParam(), sdk.NewUserMessage(sdk.NewToolResultBlock("call_Vx3kP", "sunny, 21°C", false)))
	answer, err := client.Messages.New(ctx, sdk.MessageNewParams{Model: "up-model", MaxTokens: 300, Messages: turn, Tools: tools})
	if err != nil {
		t.Fatal(err)
	}
	if len(answer.Content) != 1 || answer.Content[0].Text == "" || answer.StopReason != "end_turn" {
		t.Errorf("answer %s", answer.RawJSON())
	}
	second, _, _ := rec.get(1)
	msgs, _ := second["messages"].([]any)
	if len(msgs) != 3 {
		t.Fatalf("upstream messages %v", second["messages"])
	}
	call := fmt.Sprint(msgs[1])
	result, _ := msgs[2].(map[string]any)
	if !strings.Contains(call, "call_Vx3kP") || !strings.Contains(call, `{"location":"Paris"}`) ||
		result["role"] != "tool" || result["tool_call_id"] != "call_Vx3kP" || result["content"] != "sunny, 21°C" {
		t.Errorf("upstream second turn %v", msgs)
	}
}

// TestMessagesReasoningTranslated: an OpenAI-compatible upstream's
// reasoning_content streams as a thinking block before the text block.
func TestMessagesReasoningTranslated(t *testing.T) {
	chunk := func(delta string) string {
		return `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}` + "\n\n"
	}
	rec, _, url := recordingUpstream(t,
		chunk(`{"role":"assistant","content":""}`),
		chunk(`{"reasoning_content":"Think "}`),
		chunk(`{"reasoning_content":"hard."}`),
		chunk(`{"content":"Answer."}`),
		`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n",
		"data: [DONE]\n\n")
	p, m := openAIUpstream(url, "sk-up")
	h := newHarness(t, newConfig(p, m))
	resp := h.post(t, context.Background(), "/v1/messages", `{"model":"up-model","max_tokens":2000,"stream":true,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"q"}]}`)
	defer resp.Body.Close()
	var types []string
	var last string
	for _, ev := range newSSEReader(resp.Body).readAll(t) {
		if ev.Event == "message_delta" {
			last = ev.Data
		}
		var d struct {
			Type         string `json:"type"`
			ContentBlock struct {
				Type string `json:"type"`
			} `json:"content_block"`
			Delta struct {
				Type, Thinking, Text, StopReason string
			} `json:"delta"`
		}
		_ = json.Unmarshal([]byte(ev.Data), &d)
		if ev.Event != d.Type {
			t.Errorf("event %q carries data of type %q", ev.Event, d.Type)
		}
		s := ev.Event
		switch {
		case d.ContentBlock.Type != "":
			s += ":" + d.ContentBlock.Type
		case d.Delta.Type != "":
			s += ":" + d.Delta.Type + ":" + d.Delta.Thinking + d.Delta.Text
		}
		types = append(types, s)
	}
	want := []string{"message_start", "content_block_start:thinking", "content_block_delta:thinking_delta:Think ", "content_block_delta:thinking_delta:hard.",
		"content_block_stop", "content_block_start:text", "content_block_delta:text_delta:Answer.", "content_block_stop", "message_delta", "message_stop"}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("events\n%q\nwant\n%q", types, want)
	}
	if !strings.Contains(last, `"usage_estimated":true`) {
		t.Errorf("message_delta %s: the upstream reported no usage, so it is estimated and says so", last)
	}
	if e := rec.first()["reasoning_effort"]; e != "low" {
		t.Errorf("a 1024-token thinking budget went upstream as reasoning_effort %v, want low", e)
	}
}

// TestMessagesCountTokens: counted by Anthropic for a model it serves,
// estimated (and marked) for others.
func TestMessagesCountTokens(t *testing.T) {
	rec, url := anthropicFake(t, "testdata/anthropic_thinking.sse")
	h := newHarness(t, anthropicConfig(url))
	client := h.anthropicClient("k")
	params := sdk.MessageCountTokensParams{Model: "claude-sonnet", Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hello there"))}}
	n, err := client.Messages.CountTokens(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	got, _, path := rec.get(0)
	if n.InputTokens != 42 || path != "/v1/messages/count_tokens" || got["model"] != "claude-sonnet-4-5" {
		t.Errorf("counted %d; upstream %s %v", n.InputTokens, path, got)
	}

	params.Model = "mock-gpt"
	n, err = client.Messages.CountTokens(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if n.InputTokens < 2 || n.InputTokens > 20 || !strings.Contains(n.RawJSON(), `"estimated":true`) {
		t.Errorf("estimate %s", n.RawJSON())
	}
}

// TestMessagesErrorsInAnthropicShape: the SDK reads every refusal as the
// API error it knows, with Anthropic's status and type.
func TestMessagesErrorsInAnthropicShape(t *testing.T) {
	// The key's bucket holds one request: the only case before the last
	// that is admitted (untranslatable: refused at routing) takes it.
	h := newHarness(t, keysConfig("      requests_per_minute: 1\n      burst: 1\n"))
	msg := sdk.MessageNewParams{Model: "mock-gpt", MaxTokens: 10, Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}}
	for _, tc := range []struct {
		name, key  string
		edit       func(*sdk.MessageNewParams)
		status     int
		typ, inMsg string
	}{
		{"wrong key", "sk-wrong", nil, 401, "authentication_error", "API key"},
		{"unknown model", frontendKey, func(p *sdk.MessageNewParams) { p.Model = "claude-nope" }, 404, "not_found_error", "claude-nope"},
		{"no max_tokens", frontendKey, func(p *sdk.MessageNewParams) { p.MaxTokens = 0 }, 400, "invalid_request_error", "max_tokens"},
		{"untranslatable", frontendKey, func(p *sdk.MessageNewParams) { p.TopK = sdk.Int(5) }, 400, "invalid_request_error", "top_k"},
		{"rate limited", frontendKey, nil, 429, "rate_limit_error", "rate limit reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := msg
			if tc.edit != nil {
				tc.edit(&p)
			}
			client := h.anthropicClient(tc.key)
			_, err := client.Messages.New(context.Background(), p)
			var ae *sdk.Error
			if !errors.As(err, &ae) {
				t.Fatalf("err %v, want an API error", err)
			}
			if tc.status == 429 && ae.Response.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			if ae.StatusCode != tc.status || string(ae.Type()) != tc.typ || !strings.Contains(ae.RawJSON(), tc.inMsg) || ae.RequestID == "" && !strings.Contains(ae.RawJSON(), "request_id") {
				t.Errorf("status %d type %q body %s", ae.StatusCode, ae.Type(), ae.RawJSON())
			}
		})
	}
}

// TestMessagesOverridesPassThrough: a model's drop and force settings
// apply to a request passed through to Anthropic as to any other; the
// rest of the body is untouched, numbers as the client wrote them.
func TestMessagesOverridesPassThrough(t *testing.T) {
	rec, url := anthropicFake(t, "testdata/anthropic_thinking.sse")
	h := newHarness(t, anthropicConfig(url), func(c *config.Config) {
		m := c.Models["claude-sonnet"]
		maxTokens := 77
		m.Drop, m.Force.MaxTokens = []string{"temperature"}, &maxTokens
		c.Models["claude-sonnet"] = m
	})
	resp := h.post(t, context.Background(), "/v1/messages", `{"model":"claude-sonnet","max_tokens":4096,"temperature":0.7,"top_p":0.9,"top_k":40,
		"metadata":{"user_id":"u-1"},"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	drainClose(resp)
	got, _, _ := rec.get(0)
	if got["max_tokens"] != 77.0 || got["temperature"] != nil || got["top_p"] != 0.9 || got["top_k"] != 40.0 || fmt.Sprint(got["metadata"]) != "map[user_id:u-1]" {
		t.Errorf("upstream body %v", got)
	}
	rec.mu.Lock()
	raw := string(rec.bodies[0])
	rec.mu.Unlock()
	if !strings.Contains(raw, `"top_p":0.9`) {
		t.Errorf("top_p written back as something else than 0.9: %s", raw)
	}
}
