package openai

import (
	"encoding/json"
	"fmt"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// chatRequest is the body of POST /v1/chat/completions. Every parameter
// of OpenAI's API has a fate (docs/request-fields.md): read here, passed on
// to OpenAI-compatible upstreams (providers.OpenAIParams), or refused with
// a 400 naming it; so is any parameter the API does not have, as OpenAI
// itself refuses it. Inside messages and tools, fields are not checked:
// SDKs send back what responses held (refusal, annotations).
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
	Tools             []providers.Tool `json:"tools"`
	ToolChoice        json.RawMessage  `json:"tool_choice"`
	ResponseFormat    json.RawMessage  `json:"response_format"`
	Seed              *int             `json:"seed"`
	ParallelToolCalls *bool            `json:"parallel_tool_calls"`
	providers.OpenAIParams
	// Parameters the gateway cannot relay (audio, web search, the
	// deprecated functions): refused if set.
	Modalities       []string        `json:"modalities"`
	Audio            json.RawMessage `json:"audio"`
	WebSearchOptions json.RawMessage `json:"web_search_options"`
	Functions        json.RawMessage `json:"functions"`
	FunctionCall     json.RawMessage `json:"function_call"`
	PromptCacheKey   json.RawMessage `json:"prompt_cache_key"`
}

// UnmarshalJSON decodes the body and refuses top-level parameters that
// OpenAI's API does not have.
func (cr *chatRequest) UnmarshalJSON(b []byte) error {
	type plain chatRequest
	if err := json.Unmarshal(b, (*plain)(cr)); err != nil {
		return err
	}
	return api.ObjectKeys(b, func(k string, _ bool) error {
		if !chatParam(k) {
			return fmt.Errorf("json: unknown field %q", k)
		}
		return nil
	})
}

// chatParam reports whether name is a parameter of OpenAI's chat
// completions that the gateway decodes.
func chatParam(name string) bool {
	switch name {
	case "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n",
		"temperature", "top_p", "stop", "user", "reasoning_effort", "tools", "tool_choice", "response_format",
		"seed", "parallel_tool_calls", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs",
		"logit_bias", "store", "metadata", "service_tier", "prediction", "verbosity", "safety_identifier",
		"modalities", "audio", "web_search_options", "functions", "function_call", "prompt_cache_key":
		return true
	}
	return false
}

// refused names the first parameter set that the gateway cannot relay.
func (cr *chatRequest) refused() string {
	switch {
	case len(cr.Modalities) > 0 && !(len(cr.Modalities) == 1 && cr.Modalities[0] == "text"):
		return "modalities"
	case len(api.NullToEmpty(cr.Audio)) > 0:
		return "audio"
	case len(api.NullToEmpty(cr.WebSearchOptions)) > 0:
		return "web_search_options"
	case len(api.NullToEmpty(cr.Functions)) > 0:
		return "functions"
	case len(api.NullToEmpty(cr.FunctionCall)) > 0:
		return "function_call"
	case len(api.NullToEmpty(cr.PromptCacheKey)) > 0:
		return "prompt_cache_key"
	}
	return ""
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
	// ReasoningRedacted are the encrypted thinking blocks of the turn,
	// as streamed (delta.reasoning_redacted): one string, or several.
	ReasoningRedacted json.RawMessage `json:"reasoning_redacted"`
	// CacheControl marks a prompt-cache breakpoint after the message
	// (Anthropic's cache_control, as LiteLLM-style clients send it).
	CacheControl json.RawMessage `json:"cache_control"`
}

// ModelName is the model asked for.
func (cr *chatRequest) ModelName() string { return cr.Model }

// ToProvider converts the body to the engine's request.
func (cr *chatRequest) ToProvider() (*providers.Request, *failure.Error) {
	if cr.Model == "" {
		return nil, failure.BadParam("missing_model", "model", "model is required")
	}
	if cr.N != nil && *cr.N != 1 {
		return nil, failure.BadParam("unsupported_value", "n", "n must be 1: the gateway streams one choice")
	}
	if p := cr.refused(); p != "" {
		return nil, failure.BadParam("unsupported_parameter", p, p+" is not supported by the gateway (audio, web search and the deprecated functions are not relayed; use tools)")
	}
	if n := cr.TopLogProbs; n != nil && (*n < 0 || *n > 20) {
		return nil, failure.BadParam("invalid_value", "top_logprobs", fmt.Sprintf("top_logprobs must be between 0 and 20, got %d", *n))
	}
	req := &providers.Request{
		Messages:          make([]providers.Message, len(cr.Messages)),
		Tools:             cr.Tools,
		ToolChoice:        api.NullToEmpty(cr.ToolChoice),
		Seed:              cr.Seed,
		ParallelToolCalls: cr.ParallelToolCalls,
		OpenAI:            cr.OpenAIParams,
	}

	req.ResponseFormat = api.NullToEmpty(cr.ResponseFormat)
	for i, m := range cr.Messages {
		pm := providers.Message{Role: m.Role, Name: m.Name, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID, Reasoning: m.ReasoningContent, ReasoningSignature: m.ReasoningSignature,
			CacheControl: api.NullToEmpty(m.CacheControl)}
		if raw := api.NullToEmpty(m.ReasoningRedacted); len(raw) > 0 {
			var one string
			if json.Unmarshal(raw, &one) == nil {
				pm.RedactedReasoning = []string{one}
			} else if err := json.Unmarshal(raw, &pm.RedactedReasoning); err != nil {
				return nil, failure.BadParam("invalid_type", fmt.Sprintf("messages[%d].reasoning_redacted", i), "reasoning_redacted must be a string or an array of strings")
			}
		}
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
