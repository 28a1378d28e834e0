package api

import (
	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/engine"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
)

// Dialect is one inbound API. The gateway registers each with one line.
type Dialect interface {
	// Register adds the dialect's routes: to authed, behind the
	// dialect's own auth (when auth is on), and to open, for routes that
	// check access themselves.
	Register(authed, open gin.IRouter)
	// WriteError answers with e in the dialect's envelope, before
	// anything else was written.
	WriteError(c *gin.Context, e *failure.Error)
}

// WriteError answers with e in the gateway's default envelope,
// {"error":{...}} as OpenAI's API has it, and records it for the access
// log. The native and OpenAI dialects both use it.
func WriteError(c *gin.Context, e *failure.Error) {
	middleware.Get(c).Failed(e)
	failure.Write(c.Writer, e)
}

// Body is a dialect's request body: it names its model and converts to
// the engine's request, or says what is wrong.
type Body interface {
	ModelName() string
	ToProvider() (*providers.Request, *failure.Error)
}

// Accept decodes c's body into body (strict: unknown fields refused),
// converts it and has e admit it. When it reports false it has answered
// with write, the dialect's error writer.
func Accept(c *gin.Context, e *engine.Engine, body Body, strict bool, write func(*gin.Context, *failure.Error)) (*engine.Call, bool) {
	if fe := DecodeJSON(c.Request, body, strict); fe != nil {
		write(c, fe)
		return nil, false
	}
	req, fe := body.ToProvider()
	if fe != nil {
		write(c, fe)
		return nil, false
	}
	call, fe := e.Accept(c, req, body.ModelName())
	if fe != nil {
		write(c, fe)
		return nil, false
	}
	return call, true
}
