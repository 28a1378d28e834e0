package failure

import (
	"net/http"

	"github.com/streamgate/gateway/internal/jsonstr"
)

// AppendObject appends e as OpenAI's error object,
// {"message":...,"type":...,"param":...,"code":...}: the envelope of the
// OpenAI dialect and of the gateway's native API alike.
func AppendObject(buf []byte, e *Error) []byte {
	buf = append(buf, `{"message":`...)
	buf = jsonstr.Append(buf, e.Message)
	buf = append(buf, `,"type":`...)
	buf = jsonstr.Append(buf, e.Type)
	buf = append(buf, `,"param":`...)
	if e.Param == "" {
		buf = append(buf, "null"...)
	} else {
		buf = jsonstr.Append(buf, e.Param)
	}
	buf = append(buf, `,"code":`...)
	buf = jsonstr.Append(buf, e.Code)
	return append(buf, '}')
}

// Write answers with e as {"error":{...}} (AppendObject), with a
// Retry-After header when e asks for a wait, and on every 429 (at least a
// second: a client told to slow down is always told when to come back).
// It must only be called before anything else was written.
func Write(w http.ResponseWriter, e *Error) {
	WriteEnvelope(w, e, func(buf []byte, e *Error) []byte {
		buf = append(buf, `{"error":`...)
		buf = AppendObject(buf, e)
		return append(buf, "}\n"...)
	})
}

// WriteEnvelope answers with e as envelope renders it, with the headers
// and status Write gives it: for dialects whose error body has another
// shape.
func WriteEnvelope(w http.ResponseWriter, e *Error, envelope func(buf []byte, e *Error) []byte) {
	if s := e.RetryAfterSeconds(); s != "" {
		w.Header().Set("Retry-After", s)
	} else if e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	buf := envelope(make([]byte, 0, 256), e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_, _ = w.Write(buf)
}
