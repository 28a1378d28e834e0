// Package middleware holds the gin middleware that every route runs
// through: request IDs, the access log, panic recovery, the body-size limit
// and CORS.
package middleware

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/gin-gonic/gin"
)

// RequestIDHeader carries the request ID both ways.
const RequestIDHeader = "X-Request-ID"

// RequestID gives every request an ID: the caller's X-Request-ID when it is
// a reasonable token (so traces can span services), a fresh random one
// otherwise. It is echoed in the response header.
func RequestID() gin.HandlerFunc {
	return func(c *gin.Context) {
		id := c.GetHeader(RequestIDHeader)
		if !validID(id) {
			id = newID()
		}
		info := Get(c)
		info.RequestID = id
		c.Header(RequestIDHeader, id)
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
