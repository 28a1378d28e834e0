package middleware

import (
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// BodyLimit caps request bodies at n bytes. A declared Content-Length over
// the limit is refused at once with 413; an undeclared one is cut off by
// http.MaxBytesReader, whose error the JSON decoder turns into 413 as well.
func BodyLimit(n int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.ContentLength > n {
			c.Header("Connection", "close")
			c.AbortWithStatusJSON(http.StatusRequestEntityTooLarge, gin.H{"error": gin.H{
				"message": fmt.Sprintf("request body is larger than the limit of %d bytes", n),
				"type":    "invalid_request_error", "param": nil, "code": "request_too_large",
			}})
			return
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, n)
		c.Next()
	}
}
