// Package failure is the one error type clients are shown, whatever API
// dialect they speak, and the one function that maps any upstream, network
// or context error onto it. Dialects render an *Error in their own
// envelope; the engine decides statuses and codes only here.
package failure

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/streamgate/gateway/providers"
)

// Error is an error as the client sees it: an HTTP status, and a type and
// code in the vocabulary of OpenAI's error object (dialects with another
// vocabulary map from Status and Type).
type Error struct {
	Status int
	Type   string
	Code   string
	// Param names the request field at fault, when one is.
	Param      string
	Message    string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

// Error types, as OpenAI names them.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

// StatusClientClosedRequest is nginx's code for a client that left before
// the answer was complete; it appears only in logs.
const StatusClientClosedRequest = 499

// Codes the engine itself compares against.
const (
	CodeCancelled    = "cancelled"
	CodeClientClosed = "client_closed_request"
	CodeShutdown     = "server_shutdown"
	CodeQueueFull    = "provider_queue_full"
)

// BadRequest is a 400 invalid_request_error.
func BadRequest(code, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: code, Message: msg}
}

// BadParam is a 400 invalid_request_error about the request field param.
func BadParam(code, param, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Code: code, Param: param, Message: msg}
}

// ClientClosed is what a stream whose client left ends with.
func ClientClosed() *Error {
	return &Error{Status: StatusClientClosedRequest, Type: TypeInvalidRequest, Code: CodeClientClosed, Message: "the client closed the request"}
}

// Shutdown is what a stream ends with when the drain time ran out.
func Shutdown() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeServer, Code: CodeShutdown, Message: "the gateway is shutting down; retry on another instance"}
}

// sentinel is an error value that knows what the client is told. Its
// fields cannot change after Define, so sentinels are safe to share and to
// compare with errors.Is; Classify hands out a fresh *Error for each.
type sentinel struct{ e Error }

func (s *sentinel) Error() string   { return s.e.Message }
func (s *sentinel) failure() *Error { e := s.e; return &e }

// Define returns a sentinel error: a cause (a context's, or a stream's)
// that Classify reports as status, type, code and message. Compare it with
// errors.Is.
func Define(status int, typ, code, message string) error {
	return &sentinel{e: Error{Status: status, Type: typ, Code: code, Message: message}}
}

// ErrShutdown is the cause of a stream's cancellation when the server's
// drain timeout ran out.
var ErrShutdown = Define(http.StatusServiceUnavailable, TypeServer, CodeShutdown, "the gateway is shutting down; retry on another instance")

// Of returns the *Error that err is or carries (a sentinel's fresh copy),
// or nil when err is neither.
func Of(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var s *sentinel
	if errors.As(err, &s) {
		return s.failure()
	}
	return nil
}

// Classify maps any error from a provider, or from the stream's context,
// to what the client is told. It is the one place where upstream failures
// become HTTP statuses and error codes. The result may be changed by the
// caller: it is never shared.
func Classify(ctx context.Context, err error) *Error {
	if e := Of(err); e != nil {
		return e
	}
	if ctx.Err() != nil {
		if e := Of(context.Cause(ctx)); e != nil {
			return e
		}
		return ClientClosed()
	}
	var pe *providers.Error
	if errors.As(err, &pe) {
		return FromProvider(pe)
	}
	switch {
	case errors.Is(err, providers.ErrTruncated):
		return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: "upstream_truncated", Message: "the upstream closed the stream before the answer was complete"}
	case errors.Is(err, providers.ErrMalformed):
		return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: "upstream_malformed", Message: "the upstream sent a chunk that could not be decoded"}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: http.StatusGatewayTimeout, Type: TypeServer, Code: "upstream_timeout", Message: "the upstream did not answer in time"}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		if oe.Timeout() {
			return &Error{Status: http.StatusGatewayTimeout, Type: TypeServer, Code: "upstream_connect_timeout", Message: "connecting to the upstream timed out (connect_timeout)"}
		}
		return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: "upstream_unreachable", Message: "the upstream could not be reached"}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &Error{Status: http.StatusGatewayTimeout, Type: TypeServer, Code: "upstream_timeout", Message: "the upstream did not answer in time"}
	}
	return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: "upstream_error", Message: "the upstream connection failed: " + err.Error()}
}

// FromProvider maps what a provider classified to what the client sees.
func FromProvider(pe *providers.Error) *Error {
	e := &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: pe.Code, Param: pe.Param, Message: pe.Message, RetryAfter: pe.RetryAfter}
	switch s := pe.Status; {
	case s == 0:
		// Failed inside an open stream: the upstream's own words.
		if e.Code == "" {
			e.Code = "upstream_error"
		}
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		// Never echo what the upstream said about our credentials: its
		// message can quote part of the key.
		e.Code, e.Message = "upstream_auth_failed", "the upstream rejected the gateway's credentials for this model"
	case s == http.StatusTooManyRequests:
		e.Status, e.Type = http.StatusTooManyRequests, TypeRateLimit
		if e.Code == "" {
			e.Code = "upstream_rate_limited"
		}
	case s == http.StatusServiceUnavailable:
		e.Status = http.StatusServiceUnavailable
		if e.Code == "" {
			e.Code = "upstream_unavailable"
		}
	case s == http.StatusGatewayTimeout || s == http.StatusRequestTimeout:
		e.Status, e.Code = http.StatusGatewayTimeout, "upstream_timeout"
	case s >= 400 && s < 500 && s != http.StatusNotFound:
		// The request itself was refused (context length, bad
		// parameter): the client can fix it, so it is theirs to see.
		e.Status, e.Type = http.StatusBadRequest, TypeInvalidRequest
		if e.Code == "" {
			e.Code = "upstream_bad_request"
		}
	default:
		if e.Code == "" {
			e.Code = "upstream_error"
		}
	}
	if e.Message == "" {
		e.Message = "the upstream failed with status " + strconv.Itoa(pe.Status)
	}
	return e
}

// RetryAfterSeconds is e's Retry-After header value, rounded up to whole
// seconds; "" when e asks for no wait.
func (e *Error) RetryAfterSeconds() string {
	if e.RetryAfter <= 0 {
		return ""
	}
	return strconv.Itoa(int((e.RetryAfter + time.Second - 1) / time.Second))
}

// maxEcho bounds what of a client's or upstream's value an error message
// or log line repeats.
const maxEcho = 128

// Quote is strconv.Quote of s, cut to its first 128 bytes (at a rune
// boundary, marked with "...") so that a megabyte of model name or path
// is not echoed back whole.
func Quote(s string) string { return strconv.Quote(Truncate(s)) }

// Truncate cuts s to its first 128 bytes at a rune boundary, marked with
// "...".
func Truncate(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
