package anthropic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// Bounds of what a request may hold, beyond the body's size limit.
const (
	maxStopSequences = 64
	minThinking      = 1024
)

// messagesRequest is the body of POST /v1/messages (and, without
// max_tokens and stream, of POST /v1/messages/count_tokens). It is kept
// whole (raw) for an Anthropic upstream, which gets it as it came, and
// translated for any other: what cannot be translated is listed in only,
// and refused by such a provider with a 400 naming it
// (docs/anthropic.md).
type messagesRequest struct {
	Model         string      `json:"model"`
	Messages      []message   `json:"messages"`
	MaxTokens     *int        `json:"max_tokens"`
	System        content     `json:"system"`
	Stream        bool        `json:"stream"`
	StopSequences []string    `json:"stop_sequences"`
	Temperature   *float32    `json:"temperature"`
	TopP          *float32    `json:"top_p"`
	TopK          *int        `json:"top_k"`
	Metadata      *metadata   `json:"metadata"`
	Thinking      *thinking   `json:"thinking"`
	Tools         []tool      `json:"tools"`
	ToolChoice    *toolChoice `json:"tool_choice"`
	raw           []byte
	// only names what the body holds that a translation cannot carry.
	only []string
	// counting is set for a count_tokens body, which has no max_tokens.
	counting bool
}

type metadata struct {
	UserID string `json:"user_id"`
}

type thinking struct {
	Type         string `json:"type"`
	BudgetTokens int    `json:"budget_tokens"`
}

type toolChoice struct {
	Type                   string `json:"type"`
	Name                   string `json:"name"`
	DisableParallelToolUse bool   `json:"disable_parallel_tool_use"`
}

type tool struct {
	Type         string          `json:"type"`
	Name         string          `json:"name"`
	Description  string          `json:"description"`
	InputSchema  json.RawMessage `json:"input_schema"`
	CacheControl json.RawMessage `json:"cache_control"`
}

type message struct {
	Role    string  `json:"role"`
	Content content `json:"content"`
}

// content is a message's (or a tool result's, or the system prompt's)
// content: a string, or content blocks.
type content = api.StringOr[block]

// block is one content block, with the fields of the types the gateway
// translates; others are kept only in the raw body.
type block struct {
	Type         string          `json:"type"`
	Text         string          `json:"text"`
	CacheControl json.RawMessage `json:"cache_control"`
	// image
	Source *struct {
		Type      string `json:"type"`
		MediaType string `json:"media_type"`
		Data      string `json:"data"`
		URL       string `json:"url"`
	} `json:"source"`
	// tool_use
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
	// tool_result
	ToolUseID string  `json:"tool_use_id"`
	Content   content `json:"content"`
	IsError   bool    `json:"is_error"`
	// thinking, redacted_thinking
	Thinking  string `json:"thinking"`
	Signature string `json:"signature"`
	Data      string `json:"data"`
}

// knownFields are the Messages API's top-level fields that the gateway
// decodes. Any other (service_tier, container, mcp_servers,
// context_management, and fields added later) goes to an Anthropic
// upstream as it is, which judges it, and is refused for translation.
var knownFields = map[string]bool{
	"model": true, "messages": true, "max_tokens": true, "system": true, "stream": true, "stop_sequences": true,
	"temperature": true, "top_p": true, "top_k": true, "metadata": true, "thinking": true, "tools": true, "tool_choice": true,
}

// UnmarshalJSON decodes the body, keeping it whole, and notes the fields
// a translation cannot carry.
func (r *messagesRequest) UnmarshalJSON(b []byte) error {
	type plain messagesRequest
	p := plain{counting: r.counting}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	var only []string
	_ = api.ObjectKeys(b, func(k string, null bool) error {
		if !null && !knownFields[k] && !slices.Contains(only, k) {
			only = append(only, strings.Clone(k))
		}
		return nil
	})
	slices.Sort(only)
	*r = messagesRequest(p)
	r.raw, r.only = bytes.Clone(b), only
	return nil
}

// ModelName is the model asked for.
func (r *messagesRequest) ModelName() string { return r.Model }

// ToProvider validates the body and converts it to the engine's request,
// carrying the body itself as a Native request, which takes it over:
// call it once.
func (r *messagesRequest) ToProvider() (*providers.Request, *failure.Error) {
	if r.Model == "" {
		return nil, failure.BadParam("missing_model", "model", "model: Field required")
	}
	req := &providers.Request{Native: &providers.Native{API: providers.APIAnthropicMessages, Body: r.raw}}
	if !r.counting {
		if r.MaxTokens == nil {
			return nil, failure.BadParam("missing_max_tokens", "max_tokens", "max_tokens: Field required")
		}
		if n := *r.MaxTokens; n < 1 || n > api.MaxOutputTokens {
			return nil, failure.BadParam("invalid_value", "max_tokens", fmt.Sprintf("max_tokens: must be between 1 and %d, got %d", api.MaxOutputTokens, n))
		}
		req.MaxTokens = *r.MaxTokens
	}
	if t := r.Temperature; t != nil && (*t < 0 || *t > 1) {
		return nil, failure.BadParam("invalid_value", "temperature", fmt.Sprintf("temperature: must be between 0 and 1, got %g", *t))
	}
	if p := r.TopP; p != nil && (*p < 0 || *p > 1) {
		return nil, failure.BadParam("invalid_value", "top_p", fmt.Sprintf("top_p: must be between 0 and 1, got %g", *p))
	}
	if k := r.TopK; k != nil {
		if *k < 0 {
			return nil, failure.BadParam("invalid_value", "top_k", fmt.Sprintf("top_k: must not be negative, got %d", *k))
		}
		r.only = append(r.only, "top_k")
	}
	if len(r.StopSequences) > maxStopSequences {
		return nil, failure.BadParam("invalid_value", "stop_sequences", fmt.Sprintf("stop_sequences: at most %d, got %d", maxStopSequences, len(r.StopSequences)))
	}
	req.Temperature, req.TopP, req.Stop = r.Temperature, r.TopP, r.StopSequences
	if r.Metadata != nil {
		req.User = r.Metadata.UserID
	}
	if e := r.applyThinking(req); e != nil {
		return nil, e
	}
	if e := r.system(req); e != nil {
		return nil, e
	}
	if len(r.Messages) == 0 {
		return nil, failure.BadParam("missing_messages", "messages", "messages: at least one message is required")
	}
	for i := range r.Messages {
		if e := r.message(req, i); e != nil {
			return nil, e
		}
	}
	if e := r.tools(req); e != nil {
		return nil, e
	}
	req.Native.Only = r.only
	r.raw = nil // the request holds it now, and lets go of it (upstream.Stream)
	return req, nil
}

// applyThinking maps thinking onto a thinking budget, and onto the
// reasoning effort an OpenAI reasoning model takes for one that size.
func (r *messagesRequest) applyThinking(req *providers.Request) *failure.Error {
	t := r.Thinking
	if t == nil {
		return nil
	}
	switch t.Type {
	case "disabled":
	case "enabled":
		if t.BudgetTokens < minThinking || (req.MaxTokens > 0 && t.BudgetTokens >= req.MaxTokens) {
			return failure.BadParam("invalid_value", "thinking.budget_tokens",
				fmt.Sprintf("thinking.budget_tokens: must be at least %d and less than max_tokens, got %d", minThinking, t.BudgetTokens))
		}
		req.ThinkingBudget = t.BudgetTokens
		switch {
		case t.BudgetTokens <= 2048:
			req.ReasoningEffort = "low"
		case t.BudgetTokens <= 8192:
			req.ReasoningEffort = "medium"
		default:
			req.ReasoningEffort = "high"
		}
	default:
		r.only = append(r.only, "thinking.type "+failure.Quote(t.Type))
	}
	return nil
}

// system translates the system prompt: a string, or text blocks (one
// system message each, keeping its cache_control).
func (r *messagesRequest) system(req *providers.Request) *failure.Error {
	sys := &r.System
	switch {
	case sys.Bad:
		return failure.BadParam("invalid_type", "system", "system: must be a string or an array of text blocks")
	case sys.IsText:
		req.Messages = append(req.Messages, providers.Message{Role: "system", Content: sys.Text})
		return nil
	}
	blocks := sys.List
	for i, b := range blocks {
		if b.Type != "text" {
			return failure.BadParam("invalid_value", fmt.Sprintf("system.%d.type", i), fmt.Sprintf("system.%d.type: must be text, not %s", i, failure.Quote(b.Type)))
		}
		req.Messages = append(req.Messages, providers.Message{Role: "system", Content: b.Text, CacheControl: api.NullToEmpty(b.CacheControl)})
	}
	return nil
}

// message translates messages[i]: a user turn becomes a user message
// (text and images) and one tool message per tool_result, in the order of
// its blocks; an assistant turn one assistant message with its thinking,
// text and tool calls.
func (r *messagesRequest) message(req *providers.Request, i int) *failure.Error {
	m := r.Messages[i]
	field := fmt.Sprintf("messages.%d", i)
	if m.Role != "user" && m.Role != "assistant" {
		return failure.BadParam("invalid_value", field+".role", fmt.Sprintf("%s.role: must be user or assistant, not %s", field, failure.Quote(m.Role)))
	}
	if m.Content.Bad || (!m.Content.IsText && m.Content.List == nil) {
		return failure.BadParam("invalid_type", field+".content", field+".content: must be a string or an array of content blocks")
	}
	if m.Content.IsText {
		req.Messages = append(req.Messages, providers.Message{Role: m.Role, Content: m.Content.Text})
		return nil
	}
	blocks := m.Content.List
	if len(blocks) == 0 && (m.Role != "assistant" || i != len(r.Messages)-1) {
		// Anthropic's own rule, in its words.
		return failure.BadParam("invalid_value", field+".content", field+": all messages must have non-empty content except for the optional final assistant message")
	}
	if m.Role == "assistant" {
		return r.assistant(req, field, blocks)
	}
	user := providers.Message{Role: "user"}
	flush := func() {
		if len(user.Parts) == 0 {
			return
		}
		if len(user.Parts) == 1 && user.Parts[0].Type == "text" && len(user.Parts[0].CacheControl) == 0 {
			user.Content, user.Parts = user.Parts[0].Text, nil
		}
		req.Messages = append(req.Messages, user)
		user = providers.Message{Role: "user"}
	}
	for j, b := range blocks {
		bf := fmt.Sprintf("%s.content.%d", field, j)
		switch b.Type {
		case "text":
			user.Parts = append(user.Parts, providers.ContentPart{Type: "text", Text: b.Text, CacheControl: api.NullToEmpty(b.CacheControl)})
		case "image":
			part, ok := image(&b)
			if !ok {
				r.only = append(r.only, bf+" (an image of source type "+sourceType(&b)+")")
				continue
			}
			user.Parts = append(user.Parts, part)
		case "tool_result":
			flush()
			tm, e := r.toolResult(bf, &b)
			if e != nil {
				return e
			}
			req.Messages = append(req.Messages, tm)
		case "":
			return failure.BadParam("invalid_value", bf+".type", bf+".type: Field required")
		default:
			r.only = append(r.only, bf+" (a "+b.Type+" block)")
		}
	}
	flush()
	return nil
}

// assistant translates an assistant turn's blocks into one message.
func (r *messagesRequest) assistant(req *providers.Request, field string, blocks []block) *failure.Error {
	m := providers.Message{Role: "assistant"}
	var text strings.Builder
	for j, b := range blocks {
		bf := fmt.Sprintf("%s.content.%d", field, j)
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "thinking":
			m.Reasoning += b.Thinking
			m.ReasoningSignature = b.Signature
		case "redacted_thinking":
			m.RedactedReasoning = append(m.RedactedReasoning, b.Data)
		case "tool_use":
			if b.ID == "" || b.Name == "" {
				return failure.BadParam("invalid_value", bf, bf+": a tool_use block needs an id and a name")
			}
			args := string(api.NullToEmpty(b.Input))
			if args == "" {
				args = "{}"
			}
			m.ToolCalls = append(m.ToolCalls, providers.ToolCall{ID: b.ID, Type: "function", Function: providers.FunctionCall{Name: b.Name, Arguments: args}})
		case "":
			return failure.BadParam("invalid_value", bf+".type", bf+".type: Field required")
		default:
			r.only = append(r.only, bf+" (a "+b.Type+" block)")
		}
		if cc := api.NullToEmpty(b.CacheControl); len(cc) > 0 {
			m.CacheControl = cc
		}
	}
	m.Content = text.String()
	req.Messages = append(req.Messages, m)
	return nil
}

// toolResult translates a tool_result block into a tool message. Its
// content is a string or text blocks; is_error, which OpenAI's tool
// messages have no field for, is said in the text.
func (r *messagesRequest) toolResult(field string, b *block) (providers.Message, *failure.Error) {
	if b.ToolUseID == "" {
		return providers.Message{}, failure.BadParam("invalid_value", field+".tool_use_id", field+".tool_use_id: Field required")
	}
	m := providers.Message{Role: "tool", ToolCallID: b.ToolUseID, CacheControl: api.NullToEmpty(b.CacheControl)}
	switch c := &b.Content; {
	case c.Bad:
		return m, failure.BadParam("invalid_type", field+".content", field+".content: must be a string or an array of content blocks")
	case c.IsText:
		m.Content = c.Text
	default:
		var text strings.Builder
		for k, p := range c.List {
			if p.Type != "text" {
				r.only = append(r.only, fmt.Sprintf("%s.content.%d (a %s block in a tool result)", field, k, p.Type))
				continue
			}
			text.WriteString(p.Text)
		}
		m.Content = text.String()
	}
	if b.IsError {
		m.Content = "Error: " + m.Content
	}
	return m, nil
}

// image translates an image block with a base64 or URL source.
func image(b *block) (providers.ContentPart, bool) {
	s := b.Source
	if s == nil {
		return providers.ContentPart{}, false
	}
	part := providers.ContentPart{Type: "image_url", CacheControl: api.NullToEmpty(b.CacheControl)}
	switch s.Type {
	case "base64":
		part.ImageURL = &providers.ImageURL{URL: "data:" + s.MediaType + ";base64," + s.Data}
	case "url":
		part.ImageURL = &providers.ImageURL{URL: s.URL}
	default:
		return part, false
	}
	return part, true
}

func sourceType(b *block) string {
	if b.Source == nil {
		return "none"
	}
	return failure.Quote(b.Source.Type)
}

// tools translates custom tools into functions, and tool_choice; a tool
// of Anthropic's own (web search, code execution, bash, the text editor)
// cannot be translated.
func (r *messagesRequest) tools(req *providers.Request) *failure.Error {
	for i, t := range r.Tools {
		field := fmt.Sprintf("tools.%d", i)
		if t.Type != "" && t.Type != "custom" {
			r.only = append(r.only, field+" (the "+t.Type+" tool)")
			continue
		}
		if t.Name == "" {
			return failure.BadParam("invalid_value", field+".name", field+".name: Field required")
		}
		if len(api.NullToEmpty(t.InputSchema)) == 0 {
			return failure.BadParam("invalid_value", field+".input_schema", field+".input_schema: Field required")
		}
		req.Tools = append(req.Tools, providers.Tool{Type: "function", CacheControl: api.NullToEmpty(t.CacheControl),
			Function: providers.ToolFunction{Name: t.Name, Description: t.Description, Parameters: t.InputSchema}})
	}
	tc := r.ToolChoice
	if tc == nil {
		return nil
	}
	if tc.DisableParallelToolUse {
		one := false
		req.ParallelToolCalls = &one
	}
	switch tc.Type {
	case "auto":
		req.ToolChoice = json.RawMessage(`"auto"`)
	case "any":
		req.ToolChoice = json.RawMessage(`"required"`)
	case "none":
		req.ToolChoice = json.RawMessage(`"none"`)
	case "tool":
		if tc.Name == "" {
			return failure.BadParam("invalid_value", "tool_choice.name", "tool_choice.name: Field required for type tool")
		}
		b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}})
		req.ToolChoice = b
	default:
		return failure.BadParam("invalid_value", "tool_choice.type", "tool_choice.type: must be auto, any, tool or none, not "+failure.Quote(tc.Type))
	}
	return nil
}
