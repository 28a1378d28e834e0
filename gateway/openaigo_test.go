package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAIGoSDK drives the gateway with OpenAI's official Go SDK
// (openai-go v3) by base URL alone: streamed and whole chat completions
// (thinking included), embeddings, legacy completions and models.
func TestOpenAIGoSDK(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	c := openai.NewClient(option.WithBaseURL(h.http.URL+"/v1"), option.WithAPIKey("unused"), option.WithHTTPClient(h.http.Client()), option.WithMaxRetries(0))
	ctx := context.Background()

	st := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "mock-gpt",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi [mock tokens=4 reasoning=2]")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	var thinking string
	for st.Next() {
		chunk := st.Current()
		acc.AddChunk(chunk)
		if len(chunk.Choices) > 0 {
			thinking += chunk.Choices[0].Delta.JSON.ExtraFields["reasoning_content"].Raw()
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if got := acc.Choices[0].Message.Content; got != "This is a streamed" || acc.Choices[0].FinishReason != "stop" || acc.Usage.CompletionTokens != 6 {
		t.Errorf("streamed %q, finish %q, usage %+v", got, acc.Choices[0].FinishReason, acc.Usage)
	}
	if !strings.Contains(thinking, "Let") {
		t.Errorf("reasoning_content not in the chunks: %q", thinking)
	}

	whole, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "mock-gpt", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("[mock tokens=2]")}})
	if err != nil || whole.Choices[0].Message.Content != "This is" || whole.Usage.TotalTokens == 0 {
		t.Errorf("whole: %+v %v", whole, err)
	}

	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "mock-gpt", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}}})
	if err != nil || len(emb.Data) != 2 || len(emb.Data[0].Embedding) != 16 {
		t.Errorf("embeddings: %+v %v", emb, err)
	}

	comp, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "mock-gpt", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("[mock tokens=3]")}})
	if err != nil || comp.Choices[0].Text != "This is a" {
		t.Errorf("completion: %+v %v", comp, err)
	}

	m, err := c.Models.Get(ctx, "mock-gpt")
	if err != nil || m.ID != "mock-gpt" {
		t.Errorf("model: %+v %v", m, err)
	}
	if _, err := c.Models.Get(ctx, "nope"); err == nil {
		t.Error("an unknown model was found")
	}
}
