// Package providers defines how the gateway talks to a model: one call that
// opens a stream, and a stream that is read by pulling.
//
// The shape follows go-openai's ChatCompletionStream and openai-go's
// ssestream: anything that fails before the stream is open is the error of
// StreamChat (so the gateway can still answer with a real HTTP status);
// anything that fails later comes out of Recv. Providers start no goroutines
// of their own: cancelling the context passed to StreamChat stops the
// upstream request.
package providers

import (
	"context"
	"encoding/json"
	"strings"
)

// Provider opens streaming chat calls against one upstream.
type Provider interface {
	// StreamChat sends req upstream and returns once the upstream has
	// accepted it and its stream is open. ctx governs the whole stream, not
	// only the call: cancelling it aborts the upstream request.
	StreamChat(ctx context.Context, req *Request) (Stream, error)
}

// Stream is an open upstream response.
type Stream interface {
	// Recv returns the next chunk. It returns io.EOF after the upstream
	// finished cleanly (a chunk with a FinishReason has been seen), and any
	// other error when the stream broke. The chunk's Content and Reasoning
	// may share the stream's buffers: they are valid until the next Recv
	// or Close, and a caller that keeps them copies them.
	Recv() (Chunk, error)
	// Close releases the upstream connection. It is safe to call more than
	// once and after Recv returned an error.
	Close() error
}

// Request is a provider-neutral chat completion request.
type Request struct {
	// Model is the upstream model name (after routing), not the public one.
	Model       string
	Messages    []Message
	MaxTokens   int
	Temperature *float32
	TopP        *float32
	Stop        []string
	User        string
	Tools       []Tool
	// ToolChoice is passed through as the client sent it ("auto", "none",
	// "required" or an object naming a function).
	ToolChoice json.RawMessage
	// ResponseFormat and Seed are passed through unchanged when set.
	ResponseFormat json.RawMessage
	Seed           *int
	// ReasoningEffort asks a reasoning model to think less or more
	// (OpenAI's reasoning_effort: minimal, low, medium, high).
	ReasoningEffort string
	// ThinkingBudget, when set, turns on Anthropic's extended thinking
	// with this many tokens to think in.
	ThinkingBudget int
	// ParallelToolCalls false asks for at most one tool call a turn.
	ParallelToolCalls *bool
	// Prompt, when set, is a raw prompt for a legacy completion (POST
	// /v1/completions): sent as it is, with no chat template, to an
	// upstream that completes text; Messages is then empty. Suffix is
	// the text after the insertion point, for fill-in-the-middle.
	Prompt string
	Suffix string
	// OpenAI holds parameters of OpenAI's chat completions that only
	// upstreams speaking that API take as they are. A provider that
	// cannot honour one refuses the request with Unsupported, naming it:
	// nothing a client asked for is dropped without a word.
	OpenAI OpenAIParams
	// Native, when set, is the request as the client sent it, for a
	// provider that speaks the client's API as its own.
	Native *Native
}

// Native is a request in the wire format of an API that some providers
// speak as their own (Anthropic's Messages API, OpenAI's Responses API).
// Such a provider sends Body, with the routed model and the fields of
// Request that the engine may override written over it, instead of
// translating Request: nothing the client sent is lost on the way. It
// then streams the upstream's events back verbatim in Chunk.Raw. Any
// other provider translates Request as usual, and refuses the request
// when Only is not empty.
type Native struct {
	// API names the wire format (APIAnthropicMessages).
	API  string
	Body []byte
	// Header holds the API's own request headers to pass on
	// (anthropic-beta).
	Header map[string]string
	// Only names what Body holds that Request cannot (a document block,
	// a server tool, top_k), in the API's words: each a field's path,
	// with what it is in parentheses after it ("tools[0] (the
	// web_search tool)"). A provider that does not speak API refuses the
	// request naming the first.
	Only []string
}

// The Native APIs, and the form of Chunk.Raw for each.
const (
	// APIAnthropicMessages is Anthropic's Messages API; Raw holds whole
	// SSE frames ("event: ...\ndata: ...\n\n"), written as they are.
	APIAnthropicMessages = "anthropic.messages"
	// APIOpenAIResponses is OpenAI's Responses API; Raw holds the
	// events' JSON, one per line, which the dialect numbers and frames
	// itself (its sequence numbers and response id are the gateway's).
	APIOpenAIResponses = "openai.responses"
)

// NativeSpeaker is an optional interface of Provider, for providers that
// take a Native request of api as it is.
type NativeSpeaker interface {
	SpeaksNative(api string) bool
}

// TokenCounter is an optional interface of Provider, for providers that
// count a request's input tokens as their model does.
type TokenCounter interface {
	CountTokens(ctx context.Context, req *Request) (int, error)
}

// Untranslatable returns the error p answers req with when req holds what
// only a provider speaking its native API can send, or nil. name is p's
// name, for the message.
func Untranslatable(p Provider, req *Request, name string) error {
	n := req.Native
	if n == nil || len(n.Only) == 0 {
		return nil
	}
	if s, ok := p.(NativeSpeaker); ok && s.SpeaksNative(n.API) {
		return nil
	}
	param, _, _ := strings.Cut(n.Only[0], " (")
	return &Error{Status: 400, Code: "unsupported_parameter", Param: param,
		Message: n.Only[0] + " cannot be translated for this model's provider (" + name + "); remove it, or use a model served by a provider that speaks the API natively"}
}

// OpenAIParams are chat-completions parameters passed to OpenAI-compatible
// upstreams unchanged.
type OpenAIParams struct {
	FrequencyPenalty *float32          `json:"frequency_penalty,omitempty"`
	PresencePenalty  *float32          `json:"presence_penalty,omitempty"`
	LogProbs         bool              `json:"logprobs,omitempty"`
	TopLogProbs      *int              `json:"top_logprobs,omitempty"`
	LogitBias        map[string]int    `json:"logit_bias,omitempty"`
	Store            *bool             `json:"store,omitempty"`
	Metadata         map[string]string `json:"metadata,omitempty"`
	ServiceTier      string            `json:"service_tier,omitempty"`
	Prediction       json.RawMessage   `json:"prediction,omitempty"`
	Verbosity        string            `json:"verbosity,omitempty"`
	SafetyIdentifier string            `json:"safety_identifier,omitempty"`
}

// Set names the parameters of p that are set, in their API's words.
func (p *OpenAIParams) Set() []string {
	var out []string
	add := func(set bool, name string) {
		if set {
			out = append(out, name)
		}
	}
	add(p.FrequencyPenalty != nil, "frequency_penalty")
	add(p.PresencePenalty != nil, "presence_penalty")
	add(p.LogProbs, "logprobs")
	add(p.TopLogProbs != nil, "top_logprobs")
	add(len(p.LogitBias) > 0, "logit_bias")
	add(p.Store != nil && *p.Store, "store")
	add(len(p.Metadata) > 0, "metadata")
	add(p.ServiceTier != "", "service_tier")
	add(len(p.Prediction) > 0, "prediction")
	add(p.Verbosity != "", "verbosity")
	add(p.SafetyIdentifier != "", "safety_identifier")
	return out
}

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// Parts holds multi-part content (text and image parts); when set,
	// Content is empty.
	Parts      []ContentPart `json:"parts,omitempty"`
	Name       string        `json:"name,omitempty"`
	ToolCalls  []ToolCall    `json:"tool_calls,omitempty"`
	ToolCallID string        `json:"tool_call_id,omitempty"`
	// Reasoning is an assistant message's thinking, sent back so that a
	// thinking model can go on from it (DeepSeek's reasoning_content,
	// Anthropic's thinking block); ReasoningSignature is the signature
	// Anthropic gave it, which must come back unchanged.
	Reasoning          string `json:"reasoning_content,omitempty"`
	ReasoningSignature string `json:"reasoning_signature,omitempty"`
	// RedactedReasoning are the redacted thinking blocks of the turn, in
	// order, as the upstream sent them.
	RedactedReasoning []string `json:"reasoning_redacted,omitempty"`
	// CacheControl marks a prompt-cache breakpoint after this message
	// (see ContentPart.CacheControl).
	CacheControl json.RawMessage `json:"cache_control,omitempty"`
}

// ContentPart is one part of a multi-part message.
type ContentPart struct {
	Type     string    `json:"type"`
	Text     string    `json:"text,omitempty"`
	ImageURL *ImageURL `json:"image_url,omitempty"`
	// CacheControl marks a prompt-cache breakpoint after this part
	// ({"type":"ephemeral","ttl":"5m"|"1h"}), for Anthropic; upstreams
	// that cache by themselves (OpenAI) take no such mark.
	CacheControl json.RawMessage `json:"cache_control,omitempty"`
}

// ImageURL is the image of an image_url content part.
type ImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

// Tool is a function the model may call.
type Tool struct {
	Type     string       `json:"type"`
	Function ToolFunction `json:"function"`
	// CacheControl marks a prompt-cache breakpoint after this tool (see
	// ContentPart.CacheControl).
	CacheControl json.RawMessage `json:"cache_control,omitempty"`
}

// ToolFunction describes a callable function; Parameters is a JSON schema
// kept as raw bytes.
type ToolFunction struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      bool            `json:"strict,omitempty"`
}

// ToolCall is a complete call to a tool, as found in an assistant message.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is the name and JSON arguments of a call.
type FunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// Chunk is one piece of a streamed answer. Most chunks carry only Content.
type Chunk struct {
	// Content and Reasoning are valid until the stream's next Recv (see
	// Stream): not copying the text of every token is what keeps relaying
	// one allocation-free. The other fields are the chunk's own.
	Content string
	// Reasoning is a piece of the model's thinking, streamed before (or
	// between) its answer.
	Reasoning string
	// ReasoningSignature is the signature that ends a thinking block
	// (Anthropic's signature_delta), to be sent back with it.
	ReasoningSignature string
	// RedactedReasoning is a thinking block the upstream encrypted
	// (Anthropic's redacted_thinking data): opaque, to be sent back as
	// it is.
	RedactedReasoning string
	// ToolCalls are partial tool calls: the first delta of a call carries
	// its ID and name, later ones append to Arguments; Index says which
	// call a delta belongs to.
	ToolCalls []ToolCallDelta
	// FinishReason is set on the last content chunk ("stop", "length",
	// "tool_calls", "content_filter").
	FinishReason string
	// Usage is set when the upstream reported token counts.
	Usage *Usage
	// Raw is, for a Native request, the upstream's events that this
	// chunk stands for, whole, in the form its API's constant says: the
	// dialect relays them. The fields above still say what they carry,
	// for the engine's counting.
	Raw string
}

// ToolCallDelta is a fragment of a tool call.
type ToolCallDelta struct {
	Index     int    `json:"index"`
	ID        string `json:"id,omitempty"`
	Type      string `json:"type,omitempty"`
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
}

// Usage counts the tokens of one call.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
	// ReasoningTokens are the completion tokens spent thinking, where the
	// upstream reports them (part of CompletionTokens).
	ReasoningTokens int `json:"-"`
	// CachedTokens are prompt tokens read from the upstream's prompt
	// cache, CacheWriteTokens those written to it (Anthropic); both are
	// part of PromptTokens.
	CachedTokens     int `json:"-"`
	CacheWriteTokens int `json:"-"`
}

// Delta reports whether c carries something the client reads: answer
// text, thinking, or a tool call. The first delta ends a stream's
// "before the first token" phase (retries, first-token timeout, TTFT).
func (c *Chunk) Delta() bool {
	return c.Content != "" || c.Reasoning != "" || c.ReasoningSignature != "" || c.RedactedReasoning != "" || len(c.ToolCalls) > 0
}

// Text returns the concatenated text of a message, including text parts.
func (m *Message) Text() string {
	if len(m.Parts) == 0 {
		return m.Content
	}
	var s string
	for _, p := range m.Parts {
		if p.Type == "text" {
			s += p.Text
		}
	}
	return s
}

// IdleNotifier is an optional interface of Stream. A stream that implements
// it calls fn just before Recv would block waiting for the upstream, and
// only then. A relay uses it to write chunks that arrived together in one
// piece, and to flush everything it holds before any wait, so that no token
// is ever held back while the upstream is silent. fn runs while Recv is
// in progress, possibly on another goroutine (the HTTP transport's), and
// Recv does not return before fn has.
type IdleNotifier interface {
	NotifyIdle(fn func())
}

// Availability is an optional interface of Provider, for providers that
// can be configured yet not usable (an OpenAI provider whose key is not
// set): Unavailable says why, or is nil when the provider can serve.
type Availability interface {
	Unavailable() error
}

// Unusable returns why p cannot serve requests, or nil when it can.
func Unusable(p Provider) error {
	if a, ok := p.(Availability); ok {
		return a.Unavailable()
	}
	return nil
}

// IdleCloser is an optional interface of Provider, for providers that
// pool upstream connections.
type IdleCloser interface {
	CloseIdleConnections()
}

// CloseIdle drops p's idle upstream connections, if it keeps any.
func CloseIdle(p Provider) {
	if c, ok := p.(IdleCloser); ok {
		c.CloseIdleConnections()
	}
}

// Embedder is an optional interface of Provider, for providers that
// compute embeddings.
type Embedder interface {
	Embed(ctx context.Context, req *EmbedRequest) (*Embeddings, error)
}

// EmbedRequest asks for one vector per input.
type EmbedRequest struct {
	// Model is the upstream model name (after routing).
	Model string
	Input []string
	// Dimensions, when set, asks for vectors of this length.
	Dimensions int
	User       string
}

// Embeddings are the vectors of an EmbedRequest, in its order.
type Embeddings struct {
	Vectors [][]float32
	Usage   Usage
}
