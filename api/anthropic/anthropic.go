// Package anthropic is Anthropic's Messages API as an inbound dialect:
// POST /v1/messages (streamed as Anthropic's events, or one message) and
// POST /v1/messages/count_tokens, with Anthropic's error envelope, so
// that Claude Code and the Anthropic SDKs work by their base URL alone.
//
// To an Anthropic upstream a request goes as the client sent it and its
// events come back as the upstream sent them (providers.Native), so
// thinking signatures, cache_control, documents and server tools pass
// intact; to any other upstream it is translated (docs/anthropic.md).
package anthropic

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/engine"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/internal/tokens"
	"github.com/streamgate/gateway/middleware"
)

// endpoint labels this dialect's streams in metrics.
const endpoint = "messages"

// Dialect serves Anthropic's Messages API on an engine.
type Dialect struct{ e *engine.Engine }

// New returns the dialect on e.
func New(e *engine.Engine) *Dialect { return &Dialect{e: e} }

var _ api.Dialect = (*Dialect)(nil)

// Register adds POST /messages and POST /messages/count_tokens.
func (d *Dialect) Register(authed, _ gin.IRouter) {
	authed.POST("/messages", d.messages)
	authed.POST("/messages/count_tokens", d.countTokens)
}

// WriteError answers with Anthropic's
// {"type":"error","error":{"type":...,"message":...},"request_id":...}.
func (d *Dialect) WriteError(c *gin.Context, e *failure.Error) {
	info := middleware.Get(c)
	info.Failed(e)
	shown := *e
	if errorType(e) == "overloaded_error" && e.Status >= 500 {
		shown.Status = 529 // what Anthropic's clients retry, and say, as overloaded
	}
	failure.WriteEnvelope(c.Writer, &shown, func(buf []byte, e *failure.Error) []byte {
		return append(appendError(buf, e, info.RequestID), '\n')
	})
}

// appendError appends e as Anthropic's error object, with the request's
// id when one is given.
func appendError(buf []byte, e *failure.Error, requestID string) []byte {
	buf = append(buf, `{"type":"error","error":{"type":`...)
	buf = jsonstr.Append(buf, errorType(e))
	buf = append(buf, `,"message":`...)
	buf = jsonstr.Append(buf, e.Message)
	buf = append(buf, '}')
	if requestID != "" {
		buf = append(buf, `,"request_id":`...)
		buf = jsonstr.Append(buf, requestID)
	}
	return append(buf, '}')
}

// errorType is Anthropic's type for e: the upstream's own when it was
// Anthropic's, else the type Anthropic gives its status.
func errorType(e *failure.Error) string {
	switch e.Code {
	case "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
		"request_too_large", "rate_limit_error", "api_error", "overloaded_error", "billing_error", "timeout_error":
		return e.Code
	case "server_busy", "rate_limiter_unavailable", failure.CodeShutdown, failure.CodeQueueFull, "upstream_unavailable":
		return "overloaded_error"
	}
	switch s := e.Status; {
	case s == http.StatusUnauthorized:
		return "authentication_error"
	case s == http.StatusForbidden:
		return "permission_error"
	case s == http.StatusNotFound:
		return "not_found_error"
	case s == http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case s == http.StatusTooManyRequests:
		return "rate_limit_error"
	case s == http.StatusGatewayTimeout:
		return "timeout_error"
	case s == 529:
		return "overloaded_error"
	case s < 500:
		return "invalid_request_error"
	}
	return "api_error"
}

// accept decodes and admits a request; when it reports false it has
// answered.
func (d *Dialect) accept(c *gin.Context) (*engine.Call, *messagesRequest, bool) {
	var body messagesRequest
	call, ok := api.Accept(c, d.e, &body, false, d.WriteError)
	if ok {
		call.Request().Native.Header = betas(c)
	}
	return call, &body, ok
}

// betas are the anthropic-beta headers to pass on to an Anthropic
// upstream.
func betas(c *gin.Context) map[string]string {
	if b := c.Request.Header.Values("anthropic-beta"); len(b) > 0 {
		return map[string]string{"anthropic-beta": strings.Join(b, ",")}
	}
	return nil
}

// messages serves POST /v1/messages.
func (d *Dialect) messages(c *gin.Context) {
	call, body, ok := d.accept(c)
	if !ok {
		return
	}
	id := "msg_" + middleware.Get(c).RequestID
	if !body.Stream {
		d.complete(c, call, id, body.Model)
		return
	}
	// message_start says the input's size before the upstream counts it
	// (its message_delta has the count): a guess that costs no
	// tokenizer on every request.
	req := call.Request()
	f := newFormat(id, body.Model, tokens.ApproxInput(req.Messages, req.Tools))
	if e := call.Stream(f, endpoint); e != nil {
		d.WriteError(c, e)
	}
}

// complete answers stream=false with one message.
func (d *Dialect) complete(c *gin.Context, call *engine.Call, id, model string) {
	ans, res, e := call.Complete(endpoint)
	if e != nil {
		d.WriteError(c, e)
		return
	}
	msg, err := messageOf(id, model, &ans, &res)
	if err != nil {
		d.WriteError(c, &failure.Error{Status: http.StatusBadGateway, Type: failure.TypeServer, Code: "upstream_malformed", Message: "the upstream's answer could not be read: " + err.Error()})
		return
	}
	c.Data(http.StatusOK, "application/json", msg)
}

// countTokens serves POST /v1/messages/count_tokens: {"input_tokens":N},
// counted by Anthropic for a model it serves, estimated otherwise (and
// then marked "estimated": true).
func (d *Dialect) countTokens(c *gin.Context) {
	body := messagesRequest{counting: true}
	if fe := api.DecodeJSON(c.Request, &body, false); fe != nil {
		d.WriteError(c, fe)
		return
	}
	req, fe := body.ToProvider()
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	req.Native.Header = betas(c)
	n, estimated, fe := d.e.CountTokens(c, req, body.Model)
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	out := append([]byte(`{"input_tokens":`), strconv.Itoa(n)...)
	if estimated {
		out = append(out, `,"estimated":true`...)
	}
	c.Data(http.StatusOK, "application/json", append(out, "}\n"...))
}
