package providers

import (
	"errors"
	"fmt"
	"time"
)

// Error is an upstream failure that a provider could classify. The gateway
// maps it to an HTTP status or an error event in one place.
type Error struct {
	// Status is the upstream HTTP status, or 0 when the failure happened
	// inside an open stream.
	Status int
	// Code is a short machine-readable reason, from the upstream when it
	// gave one ("context_length_exceeded") or from the provider.
	Code string
	// Message is safe to show to the client: providers never put upstream
	// credentials in it.
	Message string
	// Param names the request parameter at fault, when one is.
	Param string
	// RetryAfter is the delay the upstream asked for, if any.
	RetryAfter time.Duration
	// Err is the underlying cause, for logs and errors.Is.
	Err error
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("upstream status %d: %s", e.Status, e.Message)
	}
	return "upstream: " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errors a stream can end with that are not an upstream's own error.
var (
	// ErrTruncated means the upstream closed the stream before saying it
	// had finished (no finish reason), so the answer may be incomplete.
	ErrTruncated = errors.New("upstream closed the stream before it finished")
	// ErrMalformed means the upstream sent a chunk that could not be
	// decoded.
	ErrMalformed = errors.New("upstream sent a malformed chunk")
	// ErrUnavailable means the provider cannot serve requests as
	// configured (for example, no API key was given).
	ErrUnavailable = errors.New("provider unavailable")
)

// Unsupported is the error of a provider asked for a parameter it cannot
// honour: a 400 naming it, never a request sent without it.
func Unsupported(param, provider string) *Error {
	return &Error{Status: 400, Code: "unsupported_parameter", Param: param,
		Message: param + " is not supported by this model's provider (" + provider + "); remove it, or use a model served by an OpenAI-compatible provider"}
}
