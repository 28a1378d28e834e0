// Package api holds what the API dialects (one package each below it)
// share: the Dialect interface the gateway registers them by, and decoding
// of request bodies and common fields into the engine's request.
package api

import (
	"strconv"

	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// DecodeJSON reads the request body into v. Every failure is an apiError
// with the status the client should see: 415 for a body that is not JSON by
// its content type, 413 for one over the size limit, 400 otherwise.
func DecodeJSON(r *http.Request, v any, strict bool) *failure.Error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return &failure.Error{Status: http.StatusUnsupportedMediaType, Type: failure.TypeInvalidRequest, Code: "unsupported_media_type",
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
		return &failure.Error{Status: http.StatusRequestEntityTooLarge, Type: failure.TypeInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("request body is larger than the limit of %d bytes", tooLarge.Limit)}
	case errors.Is(err, io.EOF):
		return failure.BadRequest("invalid_json", "request body is empty: send a JSON object")
	case errors.As(err, &syntax):
		return failure.BadRequest("invalid_json", fmt.Sprintf("request body is not valid JSON (at byte %d): %s", syntax.Offset, syntax.Error()))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return failure.BadRequest("invalid_json", "request body is not valid JSON: it ends too early")
	case errors.As(err, &typ):
		return failure.BadRequest("invalid_type", fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type.String(), typ.Value))
	default:
		return failure.BadRequest("invalid_request", strings.TrimPrefix(err.Error(), "json: "))
	}
}

// Sampling holds the generation parameters the dialects share.
type Sampling struct {
	MaxTokens   *int            `json:"max_tokens"`
	Temperature *float32        `json:"temperature"`
	TopP        *float32        `json:"top_p"`
	Stop        json.RawMessage `json:"stop"`
	User        string          `json:"user"`
}

// Apply validates the parameters and copies them into req.
func (s *Sampling) Apply(req *providers.Request) *failure.Error {
	if s.MaxTokens != nil {
		if *s.MaxTokens < 1 {
			return &failure.Error{Status: http.StatusBadRequest, Type: failure.TypeInvalidRequest, Code: "invalid_value", Message: fmt.Sprintf("max_tokens must be at least 1, got %d", *s.MaxTokens)}
		}
		req.MaxTokens = *s.MaxTokens
	}
	if t := s.Temperature; t != nil && (*t < 0 || *t > 2) {
		return failure.BadRequest("invalid_value", fmt.Sprintf("temperature must be between 0 and 2, got %g", *t))
	}
	if p := s.TopP; p != nil && (*p < 0 || *p > 1) {
		return failure.BadRequest("invalid_value", fmt.Sprintf("top_p must be between 0 and 1, got %g", *p))
	}
	req.Temperature, req.TopP, req.User = s.Temperature, s.TopP, s.User
	if len(s.Stop) > 0 && string(s.Stop) != "null" {
		var one string
		if json.Unmarshal(s.Stop, &one) == nil {
			req.Stop = []string{one}
		} else if err := json.Unmarshal(s.Stop, &req.Stop); err != nil {
			return failure.BadRequest("invalid_type", "stop must be a string or an array of strings")
		}
		if len(req.Stop) > 4 {
			return failure.BadRequest("invalid_value", fmt.Sprintf("stop may hold at most 4 sequences, got %d", len(req.Stop)))
		}
	}
	return nil
}

func validRole(r string) bool {
	switch r {
	case "system", "developer", "user", "assistant", "tool":
		return true
	}
	return false
}

// CheckMessages validates the roles of msgs, which must not be empty.
func CheckMessages(msgs []providers.Message) *failure.Error {
	if len(msgs) == 0 {
		return failure.BadRequest("missing_messages", "messages must hold at least one message")
	}
	for i := range msgs {
		if !validRole(msgs[i].Role) {
			return failure.BadRequest("invalid_value", fmt.Sprintf("messages[%d].role %q is not one of system, developer, user, assistant, tool", i, msgs[i].Role))
		}
	}
	return nil
}

// NullToEmpty drops a JSON null.
func NullToEmpty(raw json.RawMessage) json.RawMessage {
	if string(raw) == "null" {
		return nil
	}
	return raw
}

// DecodeContent accepts a string, null, or an array of content parts.
func DecodeContent(raw json.RawMessage, m *providers.Message) error {
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

// AppendUsage appends usage as OpenAI's usage object, which the
// gateway's native events carry too.
func AppendUsage(buf []byte, u *providers.Usage) []byte {
	buf = append(buf, `{"prompt_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.PromptTokens), 10)
	buf = append(buf, `,"completion_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.CompletionTokens), 10)
	buf = append(buf, `,"total_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.TotalTokens), 10)
	return append(buf, '}')
}
