package api

import (
	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
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
