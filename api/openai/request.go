package openai

import (
	"encoding/json"
	"fmt"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// chatRequest is the body of POST /v1/chat/completions. Fields the gateway
// does not know are ignored, as SDKs send many.
type chatRequest struct {
	Model         string        `json:"model"`
	Messages      []chatMessage `json:"messages"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxCompletionTokens *int `json:"max_completion_tokens"`
	N                   *int `json:"n"`
	api.Sampling
	Tools          []providers.Tool `json:"tools"`
	ToolChoice     json.RawMessage  `json:"tool_choice"`
	ResponseFormat json.RawMessage  `json:"response_format"`
	Seed           *int             `json:"seed"`
}

type chatMessage struct {
	Role       string               `json:"role"`
	Content    json.RawMessage      `json:"content"`
	Name       string               `json:"name"`
	ToolCalls  []providers.ToolCall `json:"tool_calls"`
	ToolCallID string               `json:"tool_call_id"`
	// ReasoningContent is an assistant turn's thinking, sent back as the
	// gateway streamed it (delta.reasoning_content).
	ReasoningContent string `json:"reasoning_content"`
	// ReasoningSignature is Anthropic's signature of that thinking, as
	// the gateway streamed it (delta.reasoning_signature).
	ReasoningSignature string `json:"reasoning_signature"`
}

func (cr *chatRequest) toProvider() (*providers.Request, *failure.Error) {
	if cr.Model == "" {
		return nil, failure.BadParam("missing_model", "model", "model is required")
	}
	if cr.N != nil && *cr.N != 1 {
		return nil, failure.BadParam("unsupported_value", "n", "n must be 1: the gateway streams one choice")
	}
	req := &providers.Request{
		Messages:   make([]providers.Message, len(cr.Messages)),
		Tools:      cr.Tools,
		ToolChoice: api.NullToEmpty(cr.ToolChoice),
		Seed:       cr.Seed,
	}

	req.ResponseFormat = api.NullToEmpty(cr.ResponseFormat)
	for i, m := range cr.Messages {
		pm := providers.Message{Role: m.Role, Name: m.Name, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID, Reasoning: m.ReasoningContent, ReasoningSignature: m.ReasoningSignature}
		if err := api.DecodeContent(m.Content, &pm); err != nil {
			return nil, failure.BadParam("invalid_type", fmt.Sprintf("messages[%d].content", i), fmt.Sprintf("messages[%d].content %s", i, err))
		}
		req.Messages[i] = pm
	}
	if e := api.CheckMessages(req.Messages); e != nil {
		return nil, e
	}
	if cr.MaxTokens == nil {
		cr.MaxTokens = cr.MaxCompletionTokens
	}
	if e := cr.Sampling.Apply(req); e != nil {
		return nil, e
	}
	return req, nil
}
