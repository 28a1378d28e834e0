package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/streamgate/gateway/providers"
)

// decodeJSON reads the request body into v. Every failure is an apiError
// with the status the client should see: 415 for a body that is not JSON by
// its content type, 413 for one over the size limit, 400 otherwise.
func decodeJSON(r *http.Request, v any, strict bool) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Code: "unsupported_media_type",
				Message: fmt.Sprintf("Content-Type %q is not supported: send application/json", ct)}
		}
	}
	dec := json.NewDecoder(r.Body)
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	if err == nil && dec.Decode(new(json.RawMessage)) != io.EOF {
		err = errors.New("unexpected data after the JSON object")
	}
	if err == nil {
		return nil
	}
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("request body is larger than the limit of %d bytes", tooLarge.Limit)}
	case errors.Is(err, io.EOF):
		return badRequest("invalid_json", "request body is empty: send a JSON object")
	case errors.As(err, &syntax):
		return badRequest("invalid_json", fmt.Sprintf("request body is not valid JSON (at byte %d): %s", syntax.Offset, syntax.Error()))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("invalid_json", "request body is not valid JSON: it ends too early")
	case errors.As(err, &typ):
		return badRequest("invalid_type", fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type.String(), typ.Value))
	default:
		return badRequest("invalid_request", strings.TrimPrefix(err.Error(), "json: "))
	}
}

// sampling holds the generation parameters both endpoints accept.
type sampling struct {
	MaxTokens   *int            `json:"max_tokens"`
	Temperature *float32        `json:"temperature"`
	TopP        *float32        `json:"top_p"`
	Stop        json.RawMessage `json:"stop"`
	User        string          `json:"user"`
}

// apply validates the parameters and copies them into req.
func (s *sampling) apply(req *providers.Request) *apiError {
	if s.MaxTokens != nil {
		if *s.MaxTokens < 1 {
			return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "invalid_value", Message: fmt.Sprintf("max_tokens must be at least 1, got %d", *s.MaxTokens)}
		}
		req.MaxTokens = *s.MaxTokens
	}
	if t := s.Temperature; t != nil && (*t < 0 || *t > 2) {
		return badRequest("invalid_value", fmt.Sprintf("temperature must be between 0 and 2, got %g", *t))
	}
	if p := s.TopP; p != nil && (*p < 0 || *p > 1) {
		return badRequest("invalid_value", fmt.Sprintf("top_p must be between 0 and 1, got %g", *p))
	}
	req.Temperature, req.TopP, req.User = s.Temperature, s.TopP, s.User
	if len(s.Stop) > 0 && string(s.Stop) != "null" {
		var one string
		if json.Unmarshal(s.Stop, &one) == nil {
			req.Stop = []string{one}
		} else if err := json.Unmarshal(s.Stop, &req.Stop); err != nil {
			return badRequest("invalid_type", "stop must be a string or an array of strings")
		}
		if len(req.Stop) > 4 {
			return badRequest("invalid_value", fmt.Sprintf("stop may hold at most 4 sequences, got %d", len(req.Stop)))
		}
	}
	return nil
}

var validRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true}

func checkMessages(msgs []providers.Message) *apiError {
	if len(msgs) == 0 {
		return badRequest("missing_messages", "messages must hold at least one message")
	}
	for i := range msgs {
		if !validRoles[msgs[i].Role] {
			return badRequest("invalid_value", fmt.Sprintf("messages[%d].role %q is not one of system, developer, user, assistant, tool", i, msgs[i].Role))
		}
	}
	return nil
}

// streamRequest is the body of POST /v1/stream.
type streamRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	// Prompt is shorthand for one user message.
	Prompt string `json:"prompt"`
	// System is prepended as a system message.
	System string `json:"system"`
	sampling
	// NamedEvents asks for "event: <type>" lines (also ?named_events=true).
	NamedEvents bool `json:"named_events"`
}

func (sr *streamRequest) model() string { return sr.Model }

func (sr *streamRequest) toProvider() (*providers.Request, *apiError) {
	if sr.Model == "" {
		return nil, badRequest("missing_model", "model is required")
	}
	if sr.Prompt != "" && len(sr.Messages) > 0 {
		return nil, badRequest("invalid_request", "give either prompt or messages, not both")
	}
	req := &providers.Request{}
	if sr.System != "" {
		req.Messages = append(req.Messages, providers.Message{Role: "system", Content: sr.System})
	}
	if sr.Prompt != "" {
		req.Messages = append(req.Messages, providers.Message{Role: "user", Content: sr.Prompt})
	}
	for _, m := range sr.Messages {
		req.Messages = append(req.Messages, providers.Message{Role: m.Role, Content: m.Content})
	}
	if len(sr.Messages) == 0 && sr.Prompt == "" {
		return nil, badRequest("missing_messages", "messages (or prompt) is required")
	}
	if e := checkMessages(req.Messages); e != nil {
		return nil, e
	}
	if e := sr.sampling.apply(req); e != nil {
		return nil, e
	}
	return req, nil
}

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
	sampling
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
}

func (cr *chatRequest) model() string { return cr.Model }

func (cr *chatRequest) toProvider() (*providers.Request, *apiError) {
	if cr.Model == "" {
		return nil, badRequest("missing_model", "model is required")
	}
	if cr.N != nil && *cr.N != 1 {
		return nil, badRequest("unsupported_value", "n must be 1: the gateway streams one choice")
	}
	req := &providers.Request{
		Messages:   make([]providers.Message, len(cr.Messages)),
		Tools:      cr.Tools,
		ToolChoice: nullToEmpty(cr.ToolChoice),
		Seed:       cr.Seed,
	}
	req.ResponseFormat = nullToEmpty(cr.ResponseFormat)
	for i, m := range cr.Messages {
		pm := providers.Message{Role: m.Role, Name: m.Name, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID}
		if err := decodeContent(m.Content, &pm); err != nil {
			return nil, badRequest("invalid_type", fmt.Sprintf("messages[%d].content %s", i, err))
		}
		req.Messages[i] = pm
	}
	if e := checkMessages(req.Messages); e != nil {
		return nil, e
	}
	if cr.MaxTokens == nil {
		cr.MaxTokens = cr.MaxCompletionTokens
	}
	if e := cr.sampling.apply(req); e != nil {
		return nil, e
	}
	return req, nil
}

func nullToEmpty(raw json.RawMessage) json.RawMessage {
	if string(raw) == "null" {
		return nil
	}
	return raw
}

// decodeContent accepts a string, null, or an array of content parts.
func decodeContent(raw json.RawMessage, m *providers.Message) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if raw[0] == '"' {
		return json.Unmarshal(raw, &m.Content)
	}
	if raw[0] != '[' {
		return errors.New("must be a string or an array of content parts")
	}
	if err := json.Unmarshal(raw, &m.Parts); err != nil {
		return fmt.Errorf("has a malformed content part: %w", err)
	}
	for _, p := range m.Parts {
		if p.Type != "text" && p.Type != "image_url" {
			return fmt.Errorf("has a part of unsupported type %q", p.Type)
		}
	}
	return nil
}
