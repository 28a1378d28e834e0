package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"
)

// sdk returns a go-openai client whose only change is the base URL.
func (h *harness) sdk() *goopenai.Client {
	cfg := goopenai.DefaultConfig("unused-key")
	cfg.BaseURL = h.http.URL + "/v1"
	cfg.HTTPClient = h.http.Client()
	return goopenai.NewClientWithConfig(cfg)
}

// sdkStream is what a go-openai stream delivered, put together.
type sdkStream struct {
	text, reasoning            string
	toolID, toolName, toolArgs string
	finish                     goopenai.FinishReason
	usage                      *goopenai.Usage
	chunks                     []goopenai.ChatCompletionStreamResponse
	err                        error // what ended it, if not io.EOF
}

// streamSDK sends req through the gateway with go-openai and reads the
// whole stream; a stream that cannot be opened fails the test.
func (h *harness) streamSDK(t *testing.T, req goopenai.ChatCompletionRequest) sdkStream {
	t.Helper()
	st, err := h.sdk().CreateChatCompletionStream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return readSDKStream(st)
}

// readSDKStream reads st to its end and closes it.
func readSDKStream(st *goopenai.ChatCompletionStream) sdkStream {
	defer st.Close()
	var r sdkStream
	for {
		chunk, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		r.chunks = append(r.chunks, chunk)
		if chunk.Usage != nil {
			r.usage = chunk.Usage
		}
		if len(chunk.Choices) == 0 {
			continue
		}
		ch := chunk.Choices[0]
		r.text += ch.Delta.Content
		r.reasoning += ch.Delta.ReasoningContent
		for _, tc := range ch.Delta.ToolCalls {
			r.toolID += tc.ID
			r.toolName += tc.Function.Name
			r.toolArgs += tc.Function.Arguments
		}
		if ch.FinishReason != "" {
			r.finish = ch.FinishReason
		}
	}
}

func TestChatCompletionsStreamWithSDK(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	for _, includeUsage := range []bool{false, true} {
		req := goopenai.ChatCompletionRequest{
			Model:    "mock-gpt",
			Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "say something"}},
		}
		if includeUsage {
			req.StreamOptions = &goopenai.StreamOptions{IncludeUsage: true}
		}
		r := h.streamSDK(t, req)
		if r.err != nil {
			t.Fatal(r.err)
		}
		for _, chunk := range r.chunks {
			if chunk.Object != "chat.completion.chunk" || chunk.Model != "mock-gpt" || !strings.HasPrefix(chunk.ID, "chatcmpl-") {
				t.Errorf("chunk header = %q %q %q", chunk.Object, chunk.Model, chunk.ID)
			}
		}
		usage := r.usage
		if r.text != "This is a streamed reply" || r.finish != goopenai.FinishReasonStop {
			t.Errorf("text %q finish %q", r.text, r.finish)
		}
		if includeUsage != (usage != nil) {
			t.Errorf("include_usage=%v but usage chunk = %+v", includeUsage, usage)
		}
		if usage != nil && (usage.PromptTokens != 2 || usage.CompletionTokens != 5 || usage.TotalTokens != 7) {
			t.Errorf("usage = %+v", usage)
		}
	}
}

func TestChatCompletionsNonStreamWithSDK(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	resp, err := h.sdk().CreateChatCompletion(context.Background(), goopenai.ChatCompletionRequest{
		Model:    "mock-gpt",
		Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "hi"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Object != "chat.completion" || len(resp.Choices) != 1 || resp.Choices[0].Message.Content != "This is a streamed reply" ||
		resp.Choices[0].FinishReason != "stop" || resp.Usage.TotalTokens != 6 {
		t.Errorf("response = %+v", resp)
	}
}

func TestModelsWithSDK(t *testing.T) {
	h := newHarness(t, newConfig(openAIUpstream("http://127.0.0.1:1", "k")))
	list, err := h.sdk().ListModels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range list.Models {
		ids = append(ids, m.ID+"@"+m.OwnedBy)
	}
	if got := strings.Join(ids, ","); got != "mock-gpt@mock,up-model@up" {
		t.Errorf("models = %s", got)
	}
}

// TestToolCallsRelayed replays OpenAI's recorded tool-call stream through
// the gateway and reads it back with the SDK, streaming and not.
func TestToolCallsRelayed(t *testing.T) {
	recorded, err := os.ReadFile("testdata/openai_toolcall.sse")
	if err != nil {
		t.Fatal(err)
	}
	var gotTools []any
	up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = decodeBody(r, &body)
		gotTools, _ = body["tools"].([]any)
		w.Header().Set("Content-Type", "text/event-stream")
		writeSSE(w, strings.SplitAfter(string(recorded), "\n\n")...)
	})
	h := newHarness(t, newConfig(openAIUpstream(up.URL, "sk-x")))
	req := goopenai.ChatCompletionRequest{
		Model:    "up-model",
		Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "weather in Paris?"}},
		Tools: []goopenai.Tool{{Type: goopenai.ToolTypeFunction, Function: &goopenai.FunctionDefinition{
			Name: "get_weather", Parameters: map[string]any{"type": "object", "properties": map[string]any{"location": map[string]any{"type": "string"}}},
		}}},
	}

	r := h.streamSDK(t, req)
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, chunk := range r.chunks {
		for _, c := range chunk.Choices {
			for _, tc := range c.Delta.ToolCalls {
				if tc.Index == nil || *tc.Index != 0 {
					t.Errorf("tool call delta without index 0: %+v", tc)
				}
			}
		}
	}
	id, name, args, finish := r.toolID, r.toolName, r.toolArgs, r.finish
	if len(gotTools) != 1 {
		t.Errorf("upstream got tools %v", gotTools)
	}
	if id != "call_Vx3kP" || name != "get_weather" || args != `{"location":"Paris"}` || finish != goopenai.FinishReasonToolCalls {
		t.Errorf("streamed tool call = id %q name %q args %q finish %q", id, name, args, finish)
	}

	resp, err := h.sdk().CreateChatCompletion(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	msg := resp.Choices[0].Message
	if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].ID != "call_Vx3kP" || msg.ToolCalls[0].Function.Arguments != `{"location":"Paris"}` ||
		resp.Choices[0].FinishReason != "tool_calls" || resp.Usage.TotalTokens != 97 {
		t.Errorf("non-streamed tool call = %+v usage %+v", msg, resp.Usage)
	}
}

// TestChatStreamErrorSurfacesInSDK fails the model after two tokens: the
// SDK must raise an API error carrying the code, and never see [DONE].
func TestChatStreamErrorSurfacesInSDK(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	r := h.streamSDK(t, goopenai.ChatCompletionRequest{
		Model:    "mock-gpt",
		Messages: []goopenai.ChatCompletionMessage{{Role: "user", Content: "x [mock fail_after=2]"}},
	})
	var apiErr *goopenai.APIError
	if !errors.As(r.err, &apiErr) || apiErr.Code != "mock_failure" {
		t.Fatalf("stream ended with %v, want an APIError with code mock_failure", r.err)
	}
	text := r.text
	if text != "This is " {
		t.Errorf("text before the error = %q", text)
	}
}

// TestModelsAvailableFirst: the shipped config listed gpt-4o-mini first,
// which answers 503 without a key, so a client that takes the first model
// failed. Models that can answer come first; the others say why not; one
// model can be fetched by id (the SDK's GetModel).
func TestModelsAvailableFirst(t *testing.T) {
	h := newHarness(t, newConfig("  openai:\n    type: openai\n    api_key: ${GATEWAY_TEST_UNSET_KEY}\n", "  aaa-gpt:\n    routes: [{provider: openai, model: gpt-4o-mini}]\n"))
	list, err := h.sdk().ListModels(context.Background())
	if err != nil || len(list.Models) != 2 || list.Models[0].ID != "mock-gpt" || list.Models[1].ID != "aaa-gpt" {
		t.Fatalf("models %+v, %v: want mock-gpt (usable) before aaa-gpt (no key)", list.Models, err)
	}
	body := drainClose(h.do(t, context.Background(), "GET", "/v1/models", "", ""))
	if !strings.Contains(body, `"available":false`) || !strings.Contains(body, `"unavailable_reason":"provider unavailable: its api_key is empty`) {
		t.Errorf("the unusable model does not say why: %s", body)
	}
	m, err := h.sdk().GetModel(context.Background(), "mock-gpt")
	if err != nil || m.ID != "mock-gpt" || m.OwnedBy != "mock" {
		t.Errorf("GetModel: %+v, %v", m, err)
	}
	if _, err := h.sdk().GetModel(context.Background(), "nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("GetModel of an unknown model: %v", err)
	}
}
