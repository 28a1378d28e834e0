package responses

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// createRequest is the body of POST /v1/responses. Every field has a fate
// (docs/responses.md): translated into the engine's request, echoed in
// the response object, or refused with a 400 naming it; so is a field the
// API does not have.
type createRequest struct {
	Model             string            `json:"model"`
	Input             input             `json:"input"`
	Instructions      *string           `json:"instructions"`
	Stream            bool              `json:"stream"`
	MaxOutputTokens   *int              `json:"max_output_tokens"`
	Temperature       *float32          `json:"temperature"`
	TopP              *float32          `json:"top_p"`
	Tools             []tool            `json:"tools"`
	ToolChoice        json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls *bool             `json:"parallel_tool_calls"`
	Reasoning         *reasoning        `json:"reasoning"`
	Text              *textConfig       `json:"text"`
	Metadata          map[string]string `json:"metadata"`
	User              string            `json:"user"`
	SafetyIdentifier  string            `json:"safety_identifier"`
	// Store (default true, as OpenAI's) keeps the response for GET
	// /v1/responses/{id} and previous_response_id.
	Store              *bool           `json:"store"`
	Background         bool            `json:"background"`
	PreviousResponseID string          `json:"previous_response_id"`
	Include            []string        `json:"include"`
	Truncation         string          `json:"truncation"`
	PromptCacheKey     string          `json:"prompt_cache_key"`
	ServiceTier        string          `json:"service_tier"`
	StreamOptions      json.RawMessage `json:"stream_options"`
	// Parameters the gateway cannot serve: refused if set.
	Conversation json.RawMessage `json:"conversation"`
	Prompt       json.RawMessage `json:"prompt"`
	TopLogprobs  *int            `json:"top_logprobs"`
	MaxToolCalls *int            `json:"max_tool_calls"`
}

type reasoning struct {
	Effort  string `json:"effort"`
	Summary string `json:"summary"`
}

type textConfig struct {
	Format *struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"format"`
	Verbosity string `json:"verbosity"`
}

type tool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      *bool           `json:"strict"`
}

// input is the request's input: a string (one user message), or items,
// each kept as sent too (raw), to be stored.
type input struct {
	text   string
	items  []item
	raw    []json.RawMessage
	isText bool
	bad    bool
}

func (in *input) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
	case b[0] == '"':
		in.isText = true
		in.bad = json.Unmarshal(b, &in.text) != nil
	case b[0] == '[':
		if in.bad = json.Unmarshal(b, &in.raw) != nil; in.bad {
			return nil
		}
		in.items = make([]item, len(in.raw))
		for i, r := range in.raw {
			if json.Unmarshal(r, &in.items[i]) != nil {
				in.bad = true
			}
		}
	default:
		in.bad = true
	}
	return nil
}

// prepend puts items (stored, so well formed) before the input: the
// conversation a previous_response_id continues.
func (in *input) prepend(items []json.RawMessage) error {
	if in.isText {
		msg, _ := json.Marshal(map[string]any{"type": "message", "role": "user", "content": []map[string]string{{"type": "input_text", "text": in.text}}})
		in.raw, in.items, in.isText, in.text = []json.RawMessage{msg}, make([]item, 1), false, ""
		_ = json.Unmarshal(msg, &in.items[0])
	}
	head := make([]item, len(items))
	for i, r := range items {
		if err := json.Unmarshal(r, &head[i]); err != nil {
			return fmt.Errorf("stored item %d: %w", i, err)
		}
	}
	in.raw = append(append([]json.RawMessage{}, items...), in.raw...)
	in.items = append(head, in.items...)
	return nil
}

// itemsJSON returns the input as items, a string as one user message.
func (in *input) itemsJSON() []json.RawMessage {
	if !in.isText {
		return in.raw
	}
	msg, _ := json.Marshal(map[string]any{"type": "message", "role": "user", "content": []map[string]string{{"type": "input_text", "text": in.text}}})
	return []json.RawMessage{msg}
}

// stored reports whether the response is to be kept.
func (r *createRequest) stored() bool { return r.Store == nil || *r.Store }

// item is one input item, with the fields of the types translated.
type item struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	// message
	Role    string       `json:"role"`
	Content itemContents `json:"content"`
	// function_call, function_call_output
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
	// reasoning
	Summary []struct {
		Text string `json:"text"`
	} `json:"summary"`
	EncryptedContent string `json:"encrypted_content"`
}

// itemContents is a message's content: a string or parts.
type itemContents = api.StringOr[part]

type part struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL string `json:"image_url"`
	FileID   string `json:"file_id"`
	Detail   string `json:"detail"`
	Refusal  string `json:"refusal"`
}

// createFields are the top-level fields of the API that the gateway
// decodes.
var createFields = []string{"model", "input", "instructions", "stream", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
	"parallel_tool_calls", "reasoning", "text", "metadata", "user", "safety_identifier", "store", "background", "previous_response_id",
	"include", "truncation", "prompt_cache_key", "service_tier", "stream_options", "conversation", "prompt", "top_logprobs", "max_tool_calls"}

// UnmarshalJSON decodes the body and refuses top-level fields that the
// Responses API does not have, as OpenAI does.
func (r *createRequest) UnmarshalJSON(b []byte) error {
	type plain createRequest
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	for k := range keys {
		if !slices.Contains(createFields, k) {
			return fmt.Errorf("json: unknown field %q", k)
		}
	}
	return nil
}

// ModelName is the model asked for.
func (r *createRequest) ModelName() string { return r.Model }

// refused names the first field set that the gateway cannot serve yet.
func (r *createRequest) refused() (string, string) {
	switch {
	case r.Background && !r.stored():
		return "background", "background responses must be stored: send store: true (the default) with background: true"
	case len(api.NullToEmpty(r.Conversation)) > 0:
		return "conversation", "conversation is not supported by the gateway: send the whole conversation as input"
	case len(api.NullToEmpty(r.Prompt)) > 0:
		return "prompt", "prompt templates are not supported by the gateway: send instructions and input"
	case r.TopLogprobs != nil:
		return "top_logprobs", "top_logprobs is not supported by the gateway on this endpoint"
	case r.MaxToolCalls != nil:
		return "max_tool_calls", "max_tool_calls is not supported by the gateway (it serves function tools, which the client runs)"
	case r.Truncation != "" && r.Truncation != "disabled":
		return "truncation", "truncation must be disabled (the default): the gateway does not cut conversations"
	}
	for i, inc := range r.Include {
		if inc != "reasoning.encrypted_content" {
			return fmt.Sprintf("include[%d]", i), "include may name only reasoning.encrypted_content, not " + failure.Quote(inc)
		}
	}
	return "", ""
}

// ToProvider validates the body and translates it into the engine's
// request.
func (r *createRequest) ToProvider() (*providers.Request, *failure.Error) {
	if r.Model == "" {
		return nil, failure.BadParam("missing_model", "model", "model is required")
	}
	if p, msg := r.refused(); p != "" {
		return nil, failure.BadParam("unsupported_parameter", p, msg)
	}
	req := &providers.Request{ParallelToolCalls: r.ParallelToolCalls, User: r.User}
	req.OpenAI.SafetyIdentifier, req.OpenAI.ServiceTier = r.SafetyIdentifier, r.ServiceTier
	if r.Instructions != nil && *r.Instructions != "" {
		req.Messages = append(req.Messages, providers.Message{Role: "system", Content: *r.Instructions})
	}
	if e := r.input(req); e != nil {
		return nil, e
	}
	if e := api.CheckMessages(req.Messages); e != nil {
		e.Param, e.Message = "input", "input must hold at least one message or item"
		return nil, e
	}
	s := api.Sampling{MaxTokens: r.MaxOutputTokens, Temperature: r.Temperature, TopP: r.TopP, User: r.User}
	if r.Reasoning != nil {
		s.ReasoningEffort = r.Reasoning.Effort
		switch r.Reasoning.Summary {
		case "", "auto", "concise", "detailed":
		default:
			return nil, failure.BadParam("invalid_value", "reasoning.summary", "reasoning.summary must be auto, concise or detailed, not "+failure.Quote(r.Reasoning.Summary))
		}
	}
	if e := s.Apply(req); e != nil {
		if e.Param == "max_tokens" {
			e.Param, e.Message = "max_output_tokens", strings.Replace(e.Message, "max_tokens", "max_output_tokens", 1)
		}
		if e.Param == "reasoning_effort" {
			e.Param, e.Message = "reasoning.effort", strings.Replace(e.Message, "reasoning_effort", "reasoning.effort", 1)
		}
		return nil, e
	}
	if e := r.tools(req); e != nil {
		return nil, e
	}
	if e := r.format(req); e != nil {
		return nil, e
	}
	return req, nil
}

// input translates the input items into chat messages: consecutive
// function calls (and reasoning before them) join one assistant message,
// as chat completions carries them.
func (r *createRequest) input(req *providers.Request) *failure.Error {
	in := &r.Input
	switch {
	case in.bad:
		return failure.BadParam("invalid_type", "input", "input must be a string or an array of input items")
	case in.isText:
		req.Messages = append(req.Messages, providers.Message{Role: "user", Content: in.text})
		return nil
	}
	// assistant is the open assistant message, which function calls and
	// reasoning items join until another item comes.
	var assistant *providers.Message
	open := func() *providers.Message {
		if assistant == nil {
			req.Messages = append(req.Messages, providers.Message{Role: "assistant"})
			assistant = &req.Messages[len(req.Messages)-1]
		}
		return assistant
	}
	for i, it := range in.items {
		field := fmt.Sprintf("input[%d]", i)
		typ := it.Type
		if typ == "" && it.Role != "" {
			typ = "message"
		}
		switch typ {
		case "message":
			m, e := message(field, &it)
			if e != nil {
				return e
			}
			if m.Role == "assistant" {
				a := open()
				a.Content += m.Content
				continue
			}
			req.Messages = append(req.Messages, m)
			assistant = nil
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				return failure.BadParam("invalid_value", field, field+": a function_call item needs a call_id and a name")
			}
			a := open()
			a.ToolCalls = append(a.ToolCalls, providers.ToolCall{ID: it.CallID, Type: "function", Function: providers.FunctionCall{Name: it.Name, Arguments: it.Arguments}})
		case "function_call_output":
			if it.CallID == "" {
				return failure.BadParam("invalid_value", field+".call_id", field+".call_id is required")
			}
			out, e := outputText(field, it.Output)
			if e != nil {
				return e
			}
			req.Messages = append(req.Messages, providers.Message{Role: "tool", ToolCallID: it.CallID, Content: out})
			assistant = nil
		case "reasoning":
			// The summary, or the reasoning text itself (which is
			// what the gateway's own reasoning items hold).
			a := open()
			for _, s := range it.Summary {
				a.Reasoning += s.Text
			}
			for _, p := range it.Content.List {
				a.Reasoning += p.Text
			}
		case "item_reference":
			return failure.BadParam("unsupported_parameter", field, field+": item_reference is not supported by the gateway: send the item, or continue with previous_response_id")
		default:
			return failure.BadParam("unsupported_parameter", field+".type", fmt.Sprintf("%s.type %s is not supported by the gateway (it serves message, function_call, function_call_output and reasoning items)", field, failure.Quote(typ)))
		}
	}
	return nil
}

// message translates a message item.
func message(field string, it *item) (providers.Message, *failure.Error) {
	m := providers.Message{Role: it.Role}
	switch it.Role {
	case "user", "assistant", "system", "developer":
	default:
		return m, failure.BadParam("invalid_value", field+".role", fmt.Sprintf("%s.role must be user, assistant, system or developer, not %s", field, failure.Quote(it.Role)))
	}
	c := &it.Content
	switch {
	case c.Bad || (!c.IsText && c.List == nil):
		return m, failure.BadParam("invalid_type", field+".content", field+".content must be a string or an array of content parts")
	case c.IsText:
		m.Content = c.Text
		return m, nil
	}
	for j, p := range c.List {
		pf := fmt.Sprintf("%s.content[%d]", field, j)
		switch p.Type {
		case "input_text", "output_text":
			m.Parts = append(m.Parts, providers.ContentPart{Type: "text", Text: p.Text})
		case "refusal":
			m.Parts = append(m.Parts, providers.ContentPart{Type: "text", Text: p.Refusal})
		case "input_image":
			if p.ImageURL == "" {
				return m, failure.BadParam("unsupported_parameter", pf+".file_id", pf+": an image by file_id needs OpenAI's file store; send image_url (a URL or a data: URL)")
			}
			m.Parts = append(m.Parts, providers.ContentPart{Type: "image_url", ImageURL: &providers.ImageURL{URL: p.ImageURL, Detail: p.Detail}})
		default:
			return m, failure.BadParam("unsupported_parameter", pf+".type", fmt.Sprintf("%s.type %s is not supported by the gateway (it serves input_text, input_image and output_text)", pf, failure.Quote(p.Type)))
		}
	}
	if m.Role == "assistant" || (len(m.Parts) == 1 && m.Parts[0].Type == "text") {
		m.Content, m.Parts = m.Text(), nil
	}
	return m, nil
}

// outputText is a function call's output: a string, or text parts.
func outputText(field string, raw json.RawMessage) (string, *failure.Error) {
	raw = api.NullToEmpty(raw)
	if len(raw) == 0 {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []part
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", failure.BadParam("invalid_type", field+".output", field+".output must be a string or an array of content parts")
	}
	var b strings.Builder
	for j, p := range parts {
		if p.Type != "input_text" && p.Type != "output_text" {
			return "", failure.BadParam("unsupported_parameter", fmt.Sprintf("%s.output[%d].type", field, j), fmt.Sprintf("%s.output[%d].type %s is not supported: a function's output is text", field, j, failure.Quote(p.Type)))
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// tools translates function tools and tool_choice. Tools the upstream
// would run itself (web search, file search, computer use, ...) are
// refused by name.
func (r *createRequest) tools(req *providers.Request) *failure.Error {
	for i, t := range r.Tools {
		field := fmt.Sprintf("tools[%d]", i)
		if t.Type != "function" {
			return failure.BadParam("unsupported_parameter", field+".type", fmt.Sprintf("%s.type %s is not supported by the gateway: it serves function tools", field, failure.Quote(t.Type)))
		}
		if t.Name == "" {
			return failure.BadParam("invalid_value", field+".name", field+".name is required")
		}
		fn := providers.ToolFunction{Name: t.Name, Description: t.Description, Parameters: api.NullToEmpty(t.Parameters)}
		if t.Strict != nil {
			fn.Strict = *t.Strict
		}
		req.Tools = append(req.Tools, providers.Tool{Type: "function", Function: fn})
	}
	raw := api.NullToEmpty(r.ToolChoice)
	if len(raw) == 0 {
		return nil
	}
	var word string
	if json.Unmarshal(raw, &word) == nil {
		switch word {
		case "auto", "none", "required":
			req.ToolChoice = raw
			return nil
		}
		return failure.BadParam("invalid_value", "tool_choice", "tool_choice must be auto, none, required or {\"type\":\"function\",\"name\":...}")
	}
	var fn struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &fn) != nil || fn.Type != "function" || fn.Name == "" {
		return failure.BadParam("invalid_value", "tool_choice", "tool_choice must be auto, none, required or {\"type\":\"function\",\"name\":...}")
	}
	b, _ := json.Marshal(map[string]any{"type": "function", "function": map[string]string{"name": fn.Name}})
	req.ToolChoice = b
	return nil
}

// format translates text.format into chat's response_format, and
// text.verbosity.
func (r *createRequest) format(req *providers.Request) *failure.Error {
	if r.Text == nil {
		return nil
	}
	switch r.Text.Verbosity {
	case "", "low", "medium", "high":
		req.OpenAI.Verbosity = r.Text.Verbosity
	default:
		return failure.BadParam("invalid_value", "text.verbosity", "text.verbosity must be low, medium or high")
	}
	f := r.Text.Format
	if f == nil {
		return nil
	}
	switch f.Type {
	case "text":
	case "json_object":
		req.ResponseFormat = json.RawMessage(`{"type":"json_object"}`)
	case "json_schema":
		if f.Name == "" || len(api.NullToEmpty(f.Schema)) == 0 {
			return failure.BadParam("invalid_value", "text.format", "text.format of type json_schema needs a name and a schema")
		}
		js := map[string]any{"name": f.Name, "schema": f.Schema}
		if f.Description != "" {
			js["description"] = f.Description
		}
		if f.Strict != nil {
			js["strict"] = *f.Strict
		}
		b, _ := json.Marshal(map[string]any{"type": "json_schema", "json_schema": js})
		req.ResponseFormat = b
	default:
		return failure.BadParam("invalid_value", "text.format.type", "text.format.type must be text, json_object or json_schema, not "+failure.Quote(f.Type))
	}
	return nil
}
