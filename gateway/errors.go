package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/providers"
)

// apiError is an error as the client sees it, in OpenAI's shape:
// {"error":{"message","type","param","code"}}.
type apiError struct {
	Status     int
	Type       string
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *apiError) Error() string { return e.Message }

// Error types, as OpenAI names them.
const (
	typeInvalidRequest = "invalid_request_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
)

// StatusClientClosedRequest is nginx's code for a client that left before
// the answer was complete; it appears only in logs.
const StatusClientClosedRequest = 499

// errShutdown is the cause of a stream's cancellation when the server's
// drain timeout ran out.
var errShutdown = errors.New("server is shutting down")

// Causes of a resumable stream's cancellation, both reported with
// codeCancelled.
var (
	errStreamCancelled = errors.New("stream cancelled by DELETE")
	errAbandoned       = errors.New("stream cancelled: its last reader left")
)

const codeCancelled = "cancelled"

var (
	apiCancelled = &apiError{Status: StatusClientClosedRequest, Type: typeInvalidRequest, Code: codeCancelled, Message: "the stream was cancelled (DELETE /v1/streams/{id})"}
	apiAbandoned = &apiError{Status: StatusClientClosedRequest, Type: typeInvalidRequest, Code: codeCancelled, Message: "the stream was cancelled: its last reader left and none came back"}
	// apiProducerLost ends a stream whose producing replica died.
	apiProducerLost = &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: "producer_lost", Message: "the gateway replica producing this stream stopped; the answer is incomplete"}
)

var errClientClosed = &apiError{Status: StatusClientClosedRequest, Type: typeInvalidRequest, Code: "client_closed_request", Message: "the client closed the request"}

func badRequest(code, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: code, Message: msg}
}

// classify maps any error from a provider, or from the stream's context, to
// what the client is told. It is the one place where upstream failures
// become HTTP statuses and error codes.
func classify(ctx context.Context, err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), errShutdown) {
			return &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: "server_shutdown", Message: "the gateway is shutting down; retry on another instance"}
		}
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errStreamCancelled):
			return apiCancelled
		case errors.Is(cause, errAbandoned):
			return apiAbandoned
		}
		return errClientClosed
	}

	var pe *providers.Error
	if errors.As(err, &pe) {
		return fromProvider(pe)
	}
	switch {
	case errors.Is(err, errFirstTokenTimeout):
		return &apiError{Status: http.StatusGatewayTimeout, Type: typeServer, Code: "upstream_first_token_timeout", Message: err.Error()}
	case errors.Is(err, errIdleTimeout):
		return &apiError{Status: http.StatusGatewayTimeout, Type: typeServer, Code: "upstream_idle_timeout", Message: err.Error()}
	case errors.Is(err, errStreamTimeout):
		return &apiError{Status: http.StatusGatewayTimeout, Type: typeServer, Code: "upstream_stream_timeout", Message: err.Error()}
	case errors.Is(err, providers.ErrTruncated):
		return &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: "upstream_truncated", Message: "the upstream closed the stream before the answer was complete"}
	case errors.Is(err, providers.ErrMalformed):
		return &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: "upstream_malformed", Message: "the upstream sent a chunk that could not be decoded"}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Type: typeServer, Code: "upstream_timeout", Message: "the upstream did not answer in time"}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		if oe.Timeout() {
			return &apiError{Status: http.StatusGatewayTimeout, Type: typeServer, Code: "upstream_connect_timeout", Message: "connecting to the upstream timed out (connect_timeout)"}
		}
		return &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: "upstream_unreachable", Message: "the upstream could not be reached"}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &apiError{Status: http.StatusGatewayTimeout, Type: typeServer, Code: "upstream_timeout", Message: "the upstream did not answer in time"}
	}
	return &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: "upstream_error", Message: "the upstream connection failed: " + err.Error()}
}

func fromProvider(pe *providers.Error) *apiError {
	e := &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: pe.Code, Message: pe.Message, RetryAfter: pe.RetryAfter}
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
		e.Status, e.Type = http.StatusTooManyRequests, typeRateLimit
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
		e.Status, e.Type = http.StatusBadRequest, typeInvalidRequest
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

// appendErrorObject appends {"message":...,"type":...,"param":null,"code":...}.
func appendErrorObject(buf []byte, e *apiError) []byte {
	buf = append(buf, `{"message":`...)
	buf = jsonstr.Append(buf, e.Message)
	buf = append(buf, `,"type":`...)
	buf = jsonstr.Append(buf, e.Type)
	buf = append(buf, `,"param":null,"code":`...)
	buf = jsonstr.Append(buf, e.Code)
	return append(buf, '}')
}

// writeError answers with e as JSON. It must only be called before anything
// else was written.
func writeError(c *gin.Context, e *apiError) {
	if e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	buf := make([]byte, 0, 256)
	buf = append(buf, `{"error":`...)
	buf = appendErrorObject(buf, e)
	buf = append(buf, "}\n"...)
	c.Data(e.Status, "application/json", buf)
}
