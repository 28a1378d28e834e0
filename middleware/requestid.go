// Package middleware holds the gin middleware that every route runs
// through: request IDs, the access log, panic recovery, the body-size limit
// and CORS.
package middleware

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/gin-gonic/gin"
)

// RequestIDHeader carries the request ID both ways. It is spelt in its
// canonical form, so that it indexes a header map as it is: through
// Get and Set every request canonicalised it again, into a new string.
const RequestIDHeader = "X-Request-Id"

// RequestID gives every request an ID: the caller's X-Request-ID when it is
// a reasonable token (so traces can span services), a fresh random one
// otherwise. It is echoed in the response header.
func RequestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		var id string
		if v := c.Request.Header[RequestIDHeader]; len(v) > 0 {
			id = v[0]
		}
		if !validID(id) {
			id = newID()
		}
		info := Get(c)
		info.RequestID = id
		c.Writer.Header()[RequestIDHeader] = []string{id}
		c.Next()
	}
}

func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.' || b == ':') {
			return false
		}
	}
	return true
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
