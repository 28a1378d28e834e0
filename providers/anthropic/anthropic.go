// Package anthropic is the provider for Anthropic's Messages API, built on
// the official SDK: Claude models stream through the gateway's native
// endpoint and its OpenAI-compatible one alike.
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/anthropics/anthropic-sdk-go/packages/param"
	"github.com/anthropics/anthropic-sdk-go/packages/ssestream"

	"github.com/streamgate/gateway/providers"
)

var _ providers.Provider = (*Provider)(nil)

// Options configures the provider.
type Options struct {
	// BaseURL defaults to the SDK's (https://api.anthropic.com).
	BaseURL string
	APIKey  string
	Headers map[string]string
	// MaxTokens is sent when a request gives none; Anthropic requires
	// one (default 4096).
	MaxTokens      int
	ConnectTimeout time.Duration
	// Transport replaces the default HTTP transport (tests).
	Transport http.RoundTripper
}

// Provider streams from Anthropic.
type Provider struct {
	client      sdk.Client
	http        *http.Client
	maxTokens   int
	unavailable error
}

// New builds a provider. Without an API key it is created but refuses
// calls, so that a config can list it before the key is set.
func New(opts Options) *Provider {
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = 4096
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	transport := opts.Transport
	if transport == nil {
		transport = providers.NewTransport(opts.ConnectTimeout)
	}
	httpClient := &http.Client{Transport: providers.Traced(transport)}
	ropts := []option.RequestOption{
		option.WithAPIKey(opts.APIKey),
		// No http.Client.Timeout: it would bound reading the whole stream.
		option.WithHTTPClient(httpClient),
		// The gateway retries and falls back itself, before the first
		// delta only.
		option.WithMaxRetries(0),
	}
	if opts.BaseURL != "" {
		ropts = append(ropts, option.WithBaseURL(opts.BaseURL))
	}
	for k, v := range opts.Headers {
		ropts = append(ropts, option.WithHeader(k, v))
	}
	p := &Provider{client: sdk.NewClient(ropts...), http: httpClient, maxTokens: opts.MaxTokens}
	if opts.APIKey == "" {
		p.unavailable = fmt.Errorf("%w: its api_key is empty (set the environment variable config.yaml names, e.g. ANTHROPIC_API_KEY, and restart)", providers.ErrUnavailable)
	}
	return p
}

// CloseIdleConnections drops the provider's idle upstream connections
// (the gateway calls it when a reload replaces the provider, and at exit).
func (p *Provider) CloseIdleConnections() { p.http.CloseIdleConnections() }

// Unavailable says why the provider refuses calls, or nil.
func (p *Provider) Unavailable() error { return p.unavailable }

// StreamChat opens a Messages stream.
func (p *Provider) StreamChat(ctx context.Context, req *providers.Request) (providers.Stream, error) {
	if p.unavailable != nil {
		return nil, &providers.Error{Status: http.StatusServiceUnavailable, Code: "provider_not_configured", Message: p.unavailable.Error(), Err: p.unavailable}
	}
	if n := req.Native; n != nil && n.API == providers.APIAnthropicMessages {
		return p.streamNative(ctx, req)
	}
	params, err := p.toParams(req)
	if err != nil {
		var pe *providers.Error
		if errors.As(err, &pe) {
			return nil, pe
		}
		return nil, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: err.Error(), Err: err}
	}
	st := p.client.Messages.NewStreaming(ctx, params)
	if err := st.Err(); err != nil {
		st.Close()
		return nil, classify(err)
	}
	jsonMode := params.ToolChoice.OfTool != nil && params.ToolChoice.OfTool.Name == jsonTool
	return &stream{st: st, tools: map[int64]int{}, json: jsonMode, jsonIndex: -1}, nil
}

func (p *Provider) toParams(req *providers.Request) (sdk.MessageNewParams, error) {
	params := sdk.MessageNewParams{Model: sdk.Model(req.Model), MaxTokens: int64(p.maxTokens), StopSequences: req.Stop}
	// What the Messages API has no equivalent for is refused, never
	// dropped (docs/request-fields.md).
	if set := req.OpenAI.Set(); len(set) > 0 {
		return params, providers.Unsupported(set[0], "anthropic")
	}
	if req.Prompt != "" {
		// A raw prompt is no conversation: completing it as one would
		// not be what a completion client asked for.
		return params, providers.Unsupported("prompt", "anthropic")
	}
	if req.Seed != nil {
		return params, providers.Unsupported("seed", "anthropic")
	}
	format, structured, err := responseFormat(req.ResponseFormat)
	if err != nil {
		return params, err
	}
	if structured && (len(req.Tools) > 0 || thinkingBudget(req) > 0) {
		// The answer would be one forced tool call: it cannot also
		// choose among tools, and Anthropic forces no tool while thinking.
		return params, &providers.Error{Status: http.StatusBadRequest, Code: "unsupported_parameter", Param: "response_format",
			Message: "response_format with tools or reasoning_effort is not supported by this model's provider (anthropic)"}
	}
	if req.User != "" {
		params.Metadata = sdk.MetadataParam{UserID: sdk.String(req.User)}
	}
	tc, err := toolChoice(req)
	if err != nil {
		return params, err
	}
	params.ToolChoice = tc
	if req.MaxTokens > 0 {
		params.MaxTokens = int64(req.MaxTokens)
	}
	thinking := thinkingBudget(req)
	if thinking > 0 {
		// Anthropic needs max_tokens above the budget: a request that
		// left max_tokens to the gateway gets room for an answer too; one
		// that set it thinks within it, or not at all.
		switch {
		case req.MaxTokens == 0 && params.MaxTokens <= int64(thinking):
			params.MaxTokens = int64(thinking) + int64(p.maxTokens)
		case params.MaxTokens <= int64(thinking):
			thinking = int(params.MaxTokens) - 1
		}
	}
	if thinking >= minThinking {
		params.Thinking = sdk.ThinkingConfigParamOfEnabled(int64(thinking))
	} else if req.Temperature != nil {
		// With thinking on, Anthropic accepts no temperature but 1.
		params.Temperature = sdk.Float(float64(*req.Temperature))
	}
	if req.TopP != nil {
		params.TopP = sdk.Float(float64(*req.TopP))
	}
	for _, m := range req.Messages {
		switch m.Role {
		case "system", "developer":
			block := sdk.TextBlockParam{Text: m.Text()}
			cc, err := cacheControl(m.CacheControl, "messages.cache_control")
			if err != nil {
				return params, err
			}
			block.CacheControl = cc
			params.System = append(params.System, block)
		case "user":
			blocks, err := userBlocks(&m)
			if err != nil {
				return params, err
			}
			if err := markLast(blocks, m.CacheControl); err != nil {
				return params, err
			}
			params.Messages = append(params.Messages, sdk.NewUserMessage(blocks...))
		case "assistant":
			var blocks []sdk.ContentBlockParamUnion
			// A thinking block goes back first, with the signature
			// Anthropic gave it, or the next turn is refused. Thinking
			// without one (from another provider) cannot be sent.
			if m.Reasoning != "" && m.ReasoningSignature != "" {
				blocks = append(blocks, sdk.NewThinkingBlock(m.ReasoningSignature, m.Reasoning))
			}
			for _, data := range m.RedactedReasoning {
				blocks = append(blocks, sdk.NewRedactedThinkingBlock(data))
			}
			if t := m.Text(); t != "" {
				blocks = append(blocks, sdk.NewTextBlock(t))
			}
			for _, tc := range m.ToolCalls {
				var input any = map[string]any{}
				if tc.Function.Arguments != "" {
					if err := json.Unmarshal([]byte(tc.Function.Arguments), &input); err != nil {
						return params, fmt.Errorf("tool call %s: arguments are not JSON: %w", tc.ID, err)
					}
				}
				blocks = append(blocks, sdk.NewToolUseBlock(tc.ID, input, tc.Function.Name))
			}
			if err := markLast(blocks, m.CacheControl); err != nil {
				return params, err
			}
			params.Messages = append(params.Messages, sdk.NewAssistantMessage(blocks...))
		case "tool":
			params.Messages = append(params.Messages, sdk.NewUserMessage(sdk.NewToolResultBlock(m.ToolCallID, m.Text(), false)))
		}
	}
	for _, t := range req.Tools {
		schema, err := inputSchema(t.Function.Parameters)
		if err != nil {
			return params, fmt.Errorf("tool %s: parameters: %w", t.Function.Name, err)
		}
		tool := sdk.ToolParam{Name: t.Function.Name, InputSchema: schema}
		if tool.CacheControl, err = cacheControl(t.CacheControl, "tools.cache_control"); err != nil {
			return params, err
		}
		if t.Function.Description != "" {
			tool.Description = sdk.String(t.Function.Description)
		}
		params.Tools = append(params.Tools, sdk.ToolUnionParam{OfTool: &tool})
	}
	if structured {
		params.Tools = append(params.Tools, sdk.ToolUnionParam{OfTool: &format})
		params.ToolChoice = sdk.ToolChoiceUnionParam{OfTool: &sdk.ToolChoiceToolParam{Name: jsonTool}}
	}
	return params, nil
}

type stream struct {
	st *ssestream.Stream[sdk.MessageStreamEventUnion]
	// input, cacheRead and cacheWrite are the prompt's tokens, from
	// message_start: Anthropic counts cached ones apart from input_tokens.
	input, cacheRead, cacheWrite int64
	tools                        map[int64]int // content block index → tool call index
	done                         bool
	// finished is set by the message_delta that carries the stop reason:
	// a message_stop without one ends a truncated answer.
	finished bool
	// json is set when the answer comes as the arguments of the forced
	// jsonTool call (response_format), jsonIndex its content block.
	json      bool
	jsonIndex int64
	once      sync.Once

	// native is set for a Native request: every event goes back
	// verbatim in Chunk.Raw. Until the first delta, events are held in
	// pending and go out with it, so that an attempt that fails before
	// its first delta (and is retried) leaves nothing behind.
	native    bool
	delivered bool
	pending   []byte
}

// Recv returns the next chunk: one per Messages event that makes one, or,
// for a Native request, one per event.
func (s *stream) Recv() (providers.Chunk, error) {
	for !s.done && s.st.Next() {
		ev := s.st.Current()
		c, ok := s.event(&ev)
		if !s.native {
			if ok {
				return c, nil
			}
			continue
		}
		if ev.Type == "message_stop" || ev.Type == "ping" {
			continue // the dialect writes its own: a stop only after a whole answer
		}
		s.pending = appendFrame(s.pending, string(ev.Type), ev.RawJSON())
		if !s.delivered && !c.Delta() && c.FinishReason == "" {
			continue
		}
		s.delivered = true
		c.Raw = string(s.pending)
		s.pending = s.pending[:0]
		return c, nil
	}
	if err := s.st.Err(); err != nil {
		return providers.Chunk{}, classify(err)
	}
	if !s.done || !s.finished {
		return providers.Chunk{}, providers.ErrTruncated
	}
	return providers.Chunk{}, io.EOF
}

// appendFrame appends one event as Anthropic frames it.
func appendFrame(buf []byte, event, data string) []byte {
	buf = append(buf, "event: "...)
	buf = append(buf, event...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}

// event maps one Messages event onto a chunk, reporting whether it makes
// one: text deltas to content, tool_use blocks and their input_json
// deltas to tool-call deltas, and the message_delta's stop reason and
// usage to the finish chunk.
func (s *stream) event(ev *sdk.MessageStreamEventUnion) (providers.Chunk, bool) {
	switch ev.Type {
	case "message_start":
		u := ev.Message.Usage
		s.input, s.cacheRead, s.cacheWrite = u.InputTokens, u.CacheReadInputTokens, u.CacheCreationInputTokens
	case "content_block_start":
		if ev.ContentBlock.Type == "redacted_thinking" && ev.ContentBlock.Data != "" {
			return providers.Chunk{RedactedReasoning: ev.ContentBlock.Data}, true
		}
		if s.json && ev.ContentBlock.Type == "tool_use" && ev.ContentBlock.Name == jsonTool {
			s.jsonIndex = ev.Index // its arguments are the answer's text
			return providers.Chunk{}, false
		}
		if ev.ContentBlock.Type == "tool_use" {
			i := len(s.tools)
			s.tools[ev.Index] = i
			return providers.Chunk{ToolCalls: []providers.ToolCallDelta{{Index: i, ID: ev.ContentBlock.ID, Type: "function", Name: ev.ContentBlock.Name}}}, true
		}
	case "content_block_delta":
		switch ev.Delta.Type {
		case "text_delta":
			if ev.Delta.Text != "" {
				return providers.Chunk{Content: ev.Delta.Text}, true
			}
		case "thinking_delta":
			if ev.Delta.Thinking != "" {
				return providers.Chunk{Reasoning: ev.Delta.Thinking}, true
			}
		case "signature_delta":
			if ev.Delta.Signature != "" {
				return providers.Chunk{ReasoningSignature: ev.Delta.Signature}, true
			}
		case "input_json_delta":
			if s.json && ev.Index == s.jsonIndex && ev.Delta.PartialJSON != "" {
				return providers.Chunk{Content: ev.Delta.PartialJSON}, true
			}
			if i, ok := s.tools[ev.Index]; ok && ev.Delta.PartialJSON != "" {
				return providers.Chunk{ToolCalls: []providers.ToolCallDelta{{Index: i, Arguments: ev.Delta.PartialJSON}}}, true
			}
		}
	case "message_delta":
		u := ev.Usage
		// message_delta may repeat the prompt's counts; they win.
		if u.InputTokens > 0 {
			s.input = u.InputTokens
		}
		if u.CacheReadInputTokens > 0 {
			s.cacheRead = u.CacheReadInputTokens
		}
		if u.CacheCreationInputTokens > 0 {
			s.cacheWrite = u.CacheCreationInputTokens
		}
		// The whole prompt, cached parts included, as OpenAI counts
		// prompt_tokens and as the gateway's token limits count it.
		in := s.input + s.cacheRead + s.cacheWrite
		s.finished = true
		reason := finishReason(string(ev.Delta.StopReason))
		if s.json && reason == "tool_calls" {
			reason = "stop" // the forced call was the answer
		}
		return providers.Chunk{
			FinishReason: reason,
			Usage: &providers.Usage{PromptTokens: int(in), CompletionTokens: int(u.OutputTokens), TotalTokens: int(in + u.OutputTokens),
				CachedTokens: int(s.cacheRead), CacheWriteTokens: int(s.cacheWrite)},
		}, true
	case "message_stop":
		s.done = true
	}
	return providers.Chunk{}, false
}

func (s *stream) Close() error {
	var err error
	s.once.Do(func() { err = s.st.Close() })
	return err
}

// inputSchema is a tool's JSON schema as Anthropic takes it: the whole
// schema ($defs, additionalProperties, descriptions and all), not only its
// properties.
func inputSchema(raw json.RawMessage) (sdk.ToolInputSchemaParam, error) {
	// Anthropic requires input_schema: a schema with no properties is
	// still sent, as an object without any.
	schema := sdk.ToolInputSchemaParam{Properties: map[string]any{}}
	if len(raw) == 0 {
		return schema, nil
	}
	var all map[string]any
	if err := json.Unmarshal(raw, &all); err != nil {
		return schema, err
	}
	if p, ok := all["properties"]; ok && p != nil {
		schema.Properties = p
	}
	if req, ok := all["required"].([]any); ok {
		for _, r := range req {
			if s, ok := r.(string); ok {
				schema.Required = append(schema.Required, s)
			}
		}
	}
	delete(all, "properties")
	delete(all, "required")
	delete(all, "type") // always object
	if len(all) > 0 {
		schema.ExtraFields = all
	}
	return schema, nil
}

// jsonTool is the tool a structured-output request is answered through:
// Anthropic has no response_format, so the schema becomes a tool the
// model must call, and the call's arguments are streamed back as the
// answer's text.
const jsonTool = "json_response"

// responseFormat translates OpenAI's response_format (json_object or
// json_schema) into a forced tool; ok is false for text or none.
func responseFormat(raw json.RawMessage) (tool sdk.ToolParam, ok bool, err error) {
	if len(raw) == 0 {
		return tool, false, nil
	}
	var f struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return tool, false, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_value", Param: "response_format", Message: "response_format must be an object with a type"}
	}
	switch f.Type {
	case "text":
		return tool, false, nil
	case "json_object":
		schema, _ := inputSchema(nil)
		tool = sdk.ToolParam{Name: jsonTool, InputSchema: schema, Description: sdk.String("Give the answer as one JSON object.")}
	case "json_schema":
		schema, err := inputSchema(f.JSONSchema.Schema)
		if err != nil {
			return tool, false, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_value", Param: "response_format", Message: "response_format.json_schema.schema is not a JSON schema"}
		}
		desc := "Give the answer as JSON matching this schema."
		if f.JSONSchema.Description != "" {
			desc = f.JSONSchema.Description
		}
		tool = sdk.ToolParam{Name: jsonTool, InputSchema: schema, Description: sdk.String(desc)}
	default:
		return tool, false, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_value", Param: "response_format", Message: "response_format.type must be text, json_object or json_schema"}
	}
	return tool, true, nil
}

// userBlocks translates a user message's content: text, and images (a
// base64 data URL becomes a base64 source, any other URL a URL source).
func userBlocks(m *providers.Message) ([]sdk.ContentBlockParamUnion, error) {
	if len(m.Parts) == 0 {
		return []sdk.ContentBlockParamUnion{sdk.NewTextBlock(m.Content)}, nil
	}
	var blocks []sdk.ContentBlockParamUnion
	for _, part := range m.Parts {
		n := len(blocks)
		switch {
		case part.Type == "text":
			blocks = append(blocks, sdk.NewTextBlock(part.Text))
		case part.Type == "image_url" && part.ImageURL != nil:
			url := part.ImageURL.URL
			if rest, ok := strings.CutPrefix(url, "data:"); ok {
				meta, data, ok := strings.Cut(rest, ",")
				mediaType, isBase64 := strings.CutSuffix(meta, ";base64")
				if !ok || !isBase64 {
					return nil, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_value", Param: "image_url",
						Message: "an image data URL must be base64 (data:image/png;base64,...)"}
				}
				blocks = append(blocks, sdk.NewImageBlockBase64(mediaType, data))
				continue
			}
			blocks = append(blocks, sdk.NewImageBlock(sdk.URLImageSourceParam{URL: url}))
		default:
			return nil, providers.Unsupported("content part "+part.Type, "anthropic")
		}
		if len(blocks) > n {
			if err := markLast(blocks, part.CacheControl); err != nil {
				return nil, err
			}
		}
	}
	return blocks, nil
}

// cacheControl reads a cache_control mark: {"type":"ephemeral"}, with an
// optional ttl of 5m or 1h; none when raw is empty.
func cacheControl(raw json.RawMessage, field string) (sdk.CacheControlEphemeralParam, error) {
	var cc sdk.CacheControlEphemeralParam
	if len(raw) == 0 || string(raw) == "null" {
		return cc, nil
	}
	var m struct {
		Type string `json:"type"`
		TTL  string `json:"ttl"`
	}
	if json.Unmarshal(raw, &m) != nil || m.Type != "ephemeral" || (m.TTL != "" && m.TTL != "5m" && m.TTL != "1h") {
		return cc, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_value", Param: field,
			Message: `cache_control must be {"type":"ephemeral"}, with an optional "ttl" of "5m" or "1h"`}
	}
	cc = sdk.NewCacheControlEphemeralParam()
	cc.TTL = sdk.CacheControlEphemeralTTL(m.TTL)
	return cc, nil
}

// markLast puts the cache_control mark raw (if any) on the last of blocks.
func markLast(blocks []sdk.ContentBlockParamUnion, raw json.RawMessage) error {
	cc, err := cacheControl(raw, "messages.cache_control")
	if err != nil || len(raw) == 0 || len(blocks) == 0 {
		return err
	}
	if p := blocks[len(blocks)-1].GetCacheControl(); p != nil {
		*p = cc
	}
	return nil
}

// toolChoice translates OpenAI's tool_choice ("auto", "none", "required",
// or a function by name) and parallel_tool_calls onto Anthropic's.
func toolChoice(req *providers.Request) (sdk.ToolChoiceUnionParam, error) {
	var tc sdk.ToolChoiceUnionParam
	one := req.ParallelToolCalls != nil && !*req.ParallelToolCalls
	disable := func() param.Opt[bool] {
		if one {
			return sdk.Bool(true)
		}
		return param.Opt[bool]{}
	}
	raw := req.ToolChoice
	if len(raw) == 0 {
		if one {
			tc.OfAuto = &sdk.ToolChoiceAutoParam{DisableParallelToolUse: disable()}
		}
		return tc, nil
	}
	var word string
	if json.Unmarshal(raw, &word) == nil {
		switch word {
		case "auto":
			tc.OfAuto = &sdk.ToolChoiceAutoParam{DisableParallelToolUse: disable()}
		case "none":
			tc.OfNone = &sdk.ToolChoiceNoneParam{}
		case "required":
			tc.OfAny = &sdk.ToolChoiceAnyParam{DisableParallelToolUse: disable()}
		default:
			return tc, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_value", Param: "tool_choice", Message: "tool_choice must be auto, none, required or a function"}
		}
		return tc, nil
	}
	var fn struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(raw, &fn) != nil || fn.Function.Name == "" {
		return tc, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_value", Param: "tool_choice", Message: "tool_choice must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\":...}}"}
	}
	tc.OfTool = &sdk.ToolChoiceToolParam{Name: fn.Function.Name, DisableParallelToolUse: disable()}
	return tc, nil
}

// minThinking is the smallest thinking budget Anthropic accepts.
const minThinking = 1024

// thinkingBudget is the thinking budget req asks for: its own, or one for
// its reasoning effort; 0 for none.
func thinkingBudget(req *providers.Request) int {
	if req.ThinkingBudget > 0 {
		return max(req.ThinkingBudget, minThinking)
	}
	switch req.ReasoningEffort {
	case "minimal":
		return minThinking
	case "low":
		return 2048
	case "medium":
		return 8192
	case "high":
		return 24576
	}
	return 0
}

// finishReason maps Anthropic's stop reasons onto OpenAI's.
func finishReason(r string) string {
	switch r {
	case "max_tokens":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	case "", "end_turn", "stop_sequence":
		return "stop"
	}
	// pause_turn (a long server-tool turn paused: the client sends the
	// answer back to continue it) is not a finished turn, and stays as
	// Anthropic names it; so does any reason added later.
	return r
}

// inBandStatus is the status Anthropic answers an error of type typ with
// before a stream opens; 0 (a failure inside a stream) for others.
func inBandStatus(typ string) int {
	switch typ {
	case "overloaded_error":
		return 529
	case "rate_limit_error":
		return http.StatusTooManyRequests
	case "api_error":
		return http.StatusInternalServerError
	case "invalid_request_error":
		return http.StatusBadRequest
	}
	return 0
}

// classify turns the SDK's errors into providers.Error; context and
// network errors pass through.
func classify(err error) error {
	var ae *sdk.Error
	if errors.As(err, &ae) {
		var body struct {
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal([]byte(ae.RawJSON()), &body)
		pe := &providers.Error{Status: ae.StatusCode, Code: body.Error.Type, Message: body.Error.Message, Err: err}
		if pe.Status < 400 {
			// An error event inside a stream that opened with a 200: its
			// type says what the status would have been, and so whether
			// it is worth another attempt.
			pe.Status = inBandStatus(body.Error.Type)
		}
		if pe.Message == "" {
			pe.Message = fmt.Sprintf("upstream answered %d %s", ae.StatusCode, http.StatusText(ae.StatusCode))
		}
		if ae.Response != nil {
			if s, err := strconv.Atoi(ae.Response.Header.Get("retry-after")); err == nil && s >= 0 {
				pe.RetryAfter = time.Duration(s) * time.Second
			}
		}
		return pe
	}
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return fmt.Errorf("%w: %w", providers.ErrMalformed, err)
	}
	return err
}
