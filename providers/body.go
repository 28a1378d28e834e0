package providers

import (
	"net/http"
	"strconv"

	"github.com/tidwall/sjson"
)

// BodyEdit writes fields over a Native request's body as it goes
// upstream: the routed model, and the fields the engine may have
// overridden (a model's drop and force settings). Each was decoded from
// this body, so a field nothing overrode is written back unchanged. The
// first error is kept, and reported by Bytes.
type BodyEdit struct {
	b   []byte
	err error
}

// EditBody starts editing a copy of body: sjson writes into the slice it
// is given when it has room, and the request may be sent again on a
// retry.
func EditBody(body []byte) *BodyEdit {
	return &BodyEdit{b: append(make([]byte, 0, len(body)+64), body...)}
}

// Set writes v at path.
func (e *BodyEdit) Set(path string, v any) {
	if e.err == nil {
		e.b, e.err = sjson.SetBytes(e.b, path, v)
	}
}

// Delete removes path, if it is there.
func (e *BodyEdit) Delete(path string) {
	if e.err == nil {
		e.b, e.err = sjson.DeleteBytes(e.b, path)
	}
}

// String writes v at path, or removes path when v is empty.
func (e *BodyEdit) String(path, v string) {
	if v == "" {
		e.Delete(path)
		return
	}
	e.Set(path, v)
}

// Int writes v at path, or removes path when v is not positive.
func (e *BodyEdit) Int(path string, v int) {
	if v <= 0 {
		e.Delete(path)
		return
	}
	e.Set(path, v)
}

// Float writes v at path, or removes path when v is nil. A float32
// printed at its own precision reads back as the number the client
// wrote (0.7, not 0.699999988).
func (e *BodyEdit) Float(path string, v *float32) {
	if v == nil {
		e.Delete(path)
		return
	}
	if e.err == nil {
		e.b, e.err = sjson.SetRawBytes(e.b, path, strconv.AppendFloat(nil, float64(*v), 'g', -1, 32))
	}
}

// Bytes returns the edited body, or why it could not be edited (a body
// that is not a JSON object) as a 400.
func (e *BodyEdit) Bytes() ([]byte, error) {
	if e.err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: "request body: " + e.err.Error(), Err: e.err}
	}
	return e.b, nil
}
