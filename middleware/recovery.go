package middleware

import (
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/gin-gonic/gin"
)

// Recovery turns a panic in a handler into a 500 JSON error (when nothing
// was written yet) and a log line with the stack. http.ErrAbortHandler is
// re-panicked: it is how a handler asks net/http to abort the response
// silently, and gin's own recovery would swallow it.
func Recovery(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			log.Error("panic in handler", "request_id", Get(c).RequestID, "panic", v, "stack", string(debug.Stack()))
			if c.Writer.Written() {
				// Headers are gone: the only honest signal left is to
				// break the connection.
				panic(http.ErrAbortHandler)
			}
			c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": gin.H{
				"message": "internal error", "type": "server_error", "param": nil, "code": "internal_error",
			}})
		}()
		c.Next()
	}
}
