// Package api holds what the API dialects (one package each below it)
// share: the Dialect interface the gateway registers them by, and decoding
// of request bodies and common fields into the engine's request.
package api

import (
	"bytes"
	"reflect"
	"strconv"

	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/offstack"
	"github.com/streamgate/gateway/providers"
)

// DecodeJSON reads the request body into v. Every failure is a
// *failure.Error with the status the client should see: 415 for a body
// that is not JSON by its content type (or has none: a browser page can
// send a POST without one and without asking first, so a body of unknown
// type is never taken), 413 for one over the size limit, 400 otherwise,
// each saying what was wrong in the terms of the JSON sent, with param
// naming the field.
func DecodeJSON(r *http.Request, v any, strict bool) *failure.Error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		msg := "Content-Type " + failure.Quote(ct) + " is not supported: send application/json"
		if ct == "" {
			msg = "the request has no Content-Type: send application/json"
		}
		return &failure.Error{Status: http.StatusUnsupportedMediaType, Type: failure.TypeInvalidRequest, Code: "unsupported_media_type", Message: msg}
	}
	b, err := readBody(r)
	if err == nil {
		// By reflection, as deep as the body is nested: off the
		// request's stack (see package offstack).
		offstack.Run(func() { err = unmarshal(b, v, strict) })
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
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &failure.Error{Status: http.StatusRequestTimeout, Type: failure.TypeInvalidRequest, Code: "body_timeout",
			Message: "the request body took longer than server.body_timeout to arrive"}
	case errors.Is(err, io.EOF):
		return failure.BadRequest("invalid_json", "request body is empty: send a JSON object")
	case errors.As(err, &syntax) && strings.HasSuffix(syntax.Error(), "after top-level value"):
		return failure.BadRequest("invalid_request", "unexpected data after the JSON object")
	case errors.As(err, &syntax) && syntax.Error() == "unexpected end of JSON input":
		return failure.BadRequest("invalid_json", "request body is not valid JSON: it ends too early")
	case errors.As(err, &syntax):
		return failure.BadRequest("invalid_json", fmt.Sprintf("request body is not valid JSON (at byte %d): %s", syntax.Offset, syntax.Error()))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return failure.BadRequest("invalid_json", "request body is not valid JSON: it ends too early")
	case errors.As(err, &typ):
		e := failure.BadRequest("invalid_type", "")
		typ.Field = jsonPath(typ.Field)
		if typ.Field == "" {
			e.Message = fmt.Sprintf("the request body must be a JSON object, not %s", article(jsonValue(typ.Value)))
		} else {
			e.Param = typ.Field
			e.Message = fmt.Sprintf("%s must be %s, not %s", typ.Field, article(jsonKind(typ.Type)), article(jsonValue(typ.Value)))
		}
		return e
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, _ := strconv.Unquote(field)
		e := failure.BadRequest("invalid_request", "unknown field "+failure.Quote(name)+" (check its spelling)")
		e.Param = failure.Truncate(name)
		return e
	}
	return failure.BadRequest("invalid_request", failure.Truncate(strings.TrimPrefix(err.Error(), "json: ")))
}

// readBody reads r's whole body in one allocation when it says its
// length (bounded: the length is the client's word, the body limit is
// enforced by the reader).
func readBody(r *http.Request) ([]byte, error) {
	n := 512
	if cl := r.ContentLength; cl > 0 && cl < 64<<10 {
		n = int(cl) + 1 // room to read EOF without growing
	}
	b := make([]byte, 0, n)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		m, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		switch {
		case err == io.EOF:
			return b, nil
		case err != nil:
			return b, err
		}
	}
}

// unmarshal decodes the body b into v. A body type with its own
// UnmarshalJSON is handed b directly: each begins with json.Unmarshal,
// which checks b is one valid JSON value with nothing after it (and
// only then may it scan b with ObjectKeys); going through json.Unmarshal
// here as well would check and skip the whole body twice more. The
// strict decoder refuses unknown fields at every depth.
func unmarshal(b []byte, v any, strict bool) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return io.EOF
	}
	if !strict {
		if u, ok := v.(json.Unmarshaler); ok {
			return u.UnmarshalJSON(b)
		}
		return json.Unmarshal(b, v)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.Decode(new(json.RawMessage)) != io.EOF {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// jsonKind names the JSON type a Go type is decoded from: what a client
// should have sent, in its own terms.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Name() == "RawMessage" {
			return "JSON value"
		}
		return "array"
	}
	return "object"
}

// jsonPath drops from encoding/json's field path the names of embedded
// Go structs (Sampling.max_tokens), which are not part of the JSON: every
// JSON name of the API is lower case.
func jsonPath(field string) string {
	parts := strings.Split(field, ".")
	out := parts[:0]
	for _, p := range parts {
		if p != "" && (p[0] < 'A' || p[0] > 'Z') {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}

// jsonValue is encoding/json's word for what it found, as JSON names it.
func jsonValue(v string) string {
	if v == "bool" {
		return "boolean"
	}
	return v
}

// article puts "a" or "an" before a JSON type name.
func article(kind string) string {
	if kind == "" {
		return kind
	}
	switch kind[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an " + kind
	}
	return "a " + kind
}

// MaxOutputTokens bounds max_tokens: no model writes more, and sums of
// client-supplied numbers stay far from overflowing.
const MaxOutputTokens = 1 << 20

// Sampling holds the generation parameters the dialects share.
type Sampling struct {
	MaxTokens   *int            `json:"max_tokens"`
	Temperature *float32        `json:"temperature"`
	TopP        *float32        `json:"top_p"`
	Stop        json.RawMessage `json:"stop"`
	User        string          `json:"user"`
	// ReasoningEffort asks a reasoning model to think less or more:
	// minimal, low, medium or high (OpenAI's reasoning_effort; for
	// Anthropic, a thinking budget).
	ReasoningEffort string `json:"reasoning_effort"`
}

// Apply validates the parameters and copies them into req.
func (s *Sampling) Apply(req *providers.Request) *failure.Error {
	if s.MaxTokens != nil {
		if n := *s.MaxTokens; n < 1 || n > MaxOutputTokens {
			return failure.BadParam("invalid_value", "max_tokens", fmt.Sprintf("max_tokens must be between 1 and %d, got %d", MaxOutputTokens, n))
		}
		req.MaxTokens = *s.MaxTokens
	}
	if t := s.Temperature; t != nil && (*t < 0 || *t > 2) {
		return failure.BadParam("invalid_value", "temperature", fmt.Sprintf("temperature must be between 0 and 2, got %g", *t))
	}
	if p := s.TopP; p != nil && (*p < 0 || *p > 1) {
		return failure.BadParam("invalid_value", "top_p", fmt.Sprintf("top_p must be between 0 and 1, got %g", *p))
	}
	req.Temperature, req.TopP, req.User = s.Temperature, s.TopP, s.User
	switch s.ReasoningEffort {
	case "", "minimal", "low", "medium", "high":
		req.ReasoningEffort = s.ReasoningEffort
	default:
		return failure.BadParam("invalid_value", "reasoning_effort", "reasoning_effort must be minimal, low, medium or high, not "+failure.Quote(s.ReasoningEffort))
	}
	if len(s.Stop) > 0 && string(s.Stop) != "null" {
		var one string
		if json.Unmarshal(s.Stop, &one) == nil {
			req.Stop = []string{one}
		} else if err := json.Unmarshal(s.Stop, &req.Stop); err != nil {
			return failure.BadParam("invalid_type", "stop", "stop must be a string or an array of strings")
		}
		if len(req.Stop) > 4 {
			return failure.BadParam("invalid_value", "stop", fmt.Sprintf("stop may hold at most 4 sequences, got %d", len(req.Stop)))
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
		return failure.BadParam("missing_messages", "messages", "messages must hold at least one message")
	}
	for i := range msgs {
		if !validRole(msgs[i].Role) {
			return failure.BadParam("invalid_value", fmt.Sprintf("messages[%d].role", i), fmt.Sprintf("messages[%d].role %s is not one of system, developer, user, assistant, tool", i, failure.Quote(msgs[i].Role)))
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
		return errors.New("has a malformed content part: each part is an object with a type (text or image_url) and its fields")
	}
	for _, p := range m.Parts {
		if p.Type != "text" && p.Type != "image_url" {
			return fmt.Errorf("has a part of unsupported type %s", failure.Quote(p.Type))
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
	if u.CachedTokens > 0 || u.CacheWriteTokens > 0 {
		buf = append(buf, `,"prompt_tokens_details":{"cached_tokens":`...)
		buf = strconv.AppendInt(buf, int64(u.CachedTokens), 10)
		if u.CacheWriteTokens > 0 {
			// Anthropic's cache writes: no field in OpenAI's shape.
			buf = append(buf, `,"cache_write_tokens":`...)
			buf = strconv.AppendInt(buf, int64(u.CacheWriteTokens), 10)
		}
		buf = append(buf, '}')
	}
	if u.ReasoningTokens > 0 {
		buf = append(buf, `,"completion_tokens_details":{"reasoning_tokens":`...)
		buf = strconv.AppendInt(buf, int64(u.ReasoningTokens), 10)
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// StringOr is a JSON value that APIs allow as a string or an array of T
// (a message's content: text, or blocks), decoded in the body's one pass.
// Bad marks a value that is neither, or a malformed array, for the
// dialect to refuse naming its field; null leaves it empty.
type StringOr[T any] struct {
	Text   string
	List   []T
	IsText bool
	Bad    bool
}

// UnmarshalJSON decodes b; it never fails, so that the dialect, which
// knows the field's path, says what is wrong (Bad).
func (v *StringOr[T]) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
	case b[0] == '"':
		v.IsText = true
		v.Bad = json.Unmarshal(b, &v.Text) != nil
	case b[0] == '[':
		v.Bad = json.Unmarshal(b, &v.List) != nil
	default:
		v.Bad = true
	}
	return nil
}
