package responses

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/tidwall/sjson"

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
	// Parameters only an upstream that speaks the API can take.
	Conversation json.RawMessage `json:"conversation"`
	Prompt       json.RawMessage `json:"prompt"`
	TopLogprobs  *int            `json:"top_logprobs"`
	MaxToolCalls *int            `json:"max_tool_calls"`

	// raw is the body as sent, for an upstream that speaks the API.
	raw []byte
	// only names what the body holds that a translation cannot carry
	// (hosted tools, item references, fields of the API the gateway
	// does not decode): a provider that does not speak the API refuses
	// the request naming the first.
	only []string
	// inputOnly is set when some of the input is in only.
	inputOnly bool
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
// decodes. Any other (fields the API adds later) goes to an upstream
// that speaks the API as it is, which judges it, and is refused for
// translation.
var createFields = []string{"model", "input", "instructions", "stream", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice",
	"parallel_tool_calls", "reasoning", "text", "metadata", "user", "safety_identifier", "store", "background", "previous_response_id",
	"include", "truncation", "prompt_cache_key", "service_tier", "stream_options", "conversation", "prompt", "top_logprobs", "max_tool_calls"}

// UnmarshalJSON decodes the body, keeping it whole, and notes the
// top-level fields a translation cannot carry.
func (r *createRequest) UnmarshalJSON(b []byte) error {
	type plain createRequest
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	r.only = r.only[:0]
	_ = api.ObjectKeys(b, func(k string, null bool) error {
		if !null && !slices.Contains(createFields, k) && !slices.Contains(r.only, k) {
			r.only = append(r.only, strings.Clone(k))
		}
		return nil
	})
	slices.Sort(r.only)
	r.raw = bytes.Clone(b)
	return nil
}

// ModelName is the model asked for.
func (r *createRequest) ModelName() string { return r.Model }

// refused names the first field set that the gateway cannot serve.
func (r *createRequest) refused() (string, string) {
	if r.Background && !r.stored() {
		return "background", "background responses must be stored: send store: true (the default) with background: true"
	}
	return "", ""
}

// untranslated notes the fields set that only an upstream speaking the
// API can take.
func (r *createRequest) untranslated() {
	add := func(set bool, name string) {
		if set {
			r.only = append(r.only, name)
		}
	}
	add(len(api.NullToEmpty(r.Conversation)) > 0, "conversation")
	add(len(api.NullToEmpty(r.Prompt)) > 0, "prompt (a prompt template)")
	add(r.TopLogprobs != nil, "top_logprobs")
	add(r.MaxToolCalls != nil, "max_tool_calls")
	add(r.Truncation != "" && r.Truncation != "disabled", "truncation ("+failure.Quote(r.Truncation)+")")
	for i, inc := range r.Include {
		add(inc != "reasoning.encrypted_content", fmt.Sprintf("include[%d] (%s)", i, failure.Quote(inc)))
	}
}

// ToProvider validates the body and translates it into the engine's
// request, which takes the raw body over: call it once.
func (r *createRequest) ToProvider() (*providers.Request, *failure.Error) {
	if r.Model == "" {
		return nil, failure.BadParam("missing_model", "model", "model is required")
	}
	if p, msg := r.refused(); p != "" {
		return nil, failure.BadParam("unsupported_parameter", p, msg)
	}
	r.untranslated()
	req := &providers.Request{ParallelToolCalls: r.ParallelToolCalls, User: r.User}
	req.OpenAI.SafetyIdentifier, req.OpenAI.ServiceTier = r.SafetyIdentifier, r.ServiceTier
	if r.Instructions != nil && *r.Instructions != "" {
		req.Messages = append(req.Messages, providers.Message{Role: "system", Content: *r.Instructions})
	}
	if e := r.input(req); e != nil {
		return nil, e
	}
	// Input of items only an upstream speaking the API reads (an
	// item_reference) is its to judge.
	if e := api.CheckMessages(req.Messages); e != nil && !r.inputOnly {
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
	body, err := r.nativeBody()
	if err != nil {
		return nil, &failure.Error{Status: http.StatusBadRequest, Type: failure.TypeInvalidRequest, Code: "invalid_request", Message: "request body: " + err.Error()}
	}
	req.Native = &providers.Native{API: providers.APIOpenAIResponses, Body: body, Only: r.only}
	r.raw = nil // the request holds it now, and lets go of it (upstream.Stream)
	return req, nil
}

// nativeBody is the body for an upstream that speaks the API: as sent,
// except that a conversation continued with previous_response_id is sent
// whole, since the id is the gateway's and not the upstream's.
func (r *createRequest) nativeBody() ([]byte, error) {
	if r.PreviousResponseID == "" {
		return r.raw, nil
	}
	in, _ := json.Marshal(r.Input.itemsJSON()) // raw messages: cannot fail
	b, err := sjson.SetRawBytes(bytes.Clone(r.raw), "input", in)
	if err != nil {
		return nil, err
	}
	return sjson.DeleteBytes(b, "previous_response_id")
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
			m, e := r.message(field, &it)
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
		default:
			// An item_reference, a hosted tool's call (web_search_call,
			// computer_call_output, ...), or a type added later: the
			// upstream's to read.
			r.only, r.inputOnly = append(r.only, fmt.Sprintf("%s (a %s item)", field, failure.Quote(typ))), true
		}
	}
	return nil
}

// message translates a message item.
func (r *createRequest) message(field string, it *item) (providers.Message, *failure.Error) {
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
				r.only, r.inputOnly = append(r.only, pf+" (an image by file_id, in OpenAI's file store)"), true
				continue
			}
			m.Parts = append(m.Parts, providers.ContentPart{Type: "image_url", ImageURL: &providers.ImageURL{URL: p.ImageURL, Detail: p.Detail}})
		default:
			// input_file, input_audio, or a part added later.
			r.only, r.inputOnly = append(r.only, fmt.Sprintf("%s (an %s part)", pf, failure.Quote(p.Type))), true
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
			// web_search, file_search, computer_use_preview, mcp, ...:
			// tools the upstream runs itself.
			r.only = append(r.only, fmt.Sprintf("%s (the %s tool)", field, failure.Quote(t.Type)))
			continue
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
	if json.Unmarshal(raw, &fn) == nil && fn.Type != "function" && fn.Type != "" {
		// A hosted tool, allowed_tools, a custom tool: the upstream's.
		r.only = append(r.only, "tool_choice (of type "+failure.Quote(fn.Type)+")")
		return nil
	}
	if fn.Type != "function" || fn.Name == "" {
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
