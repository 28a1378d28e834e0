package middleware

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// Auth requires a known API key, sent as "Authorization: Bearer KEY" or
// "x-api-key: KEY", and records the key's name (never the key) in Info.
// keys maps the hex SHA-256 of each secret to its name, so the config may
// hold only hashes.
func Auth(keys map[string]string) gin.HandlerFunc {
	return func(c *gin.Context) {
		key := c.GetHeader("x-api-key")
		if auth := c.GetHeader("Authorization"); auth != "" {
			scheme, token, ok := strings.Cut(auth, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				deny(c, "the Authorization header must be \"Bearer YOUR_KEY\"")
				return
			}
			key = strings.TrimSpace(token)
		}
		if key == "" {
			deny(c, "missing API key: send \"Authorization: Bearer YOUR_KEY\" or \"x-api-key: YOUR_KEY\"")
			return
		}
		name, ok := lookup(keys, key)
		if !ok {
			deny(c, "invalid API key")
			return
		}
		Get(c).KeyName = name
		c.Next()
	}
}

func deny(c *gin.Context, msg string) {
	c.Header("WWW-Authenticate", `Bearer realm="gateway"`)
	c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": gin.H{
		"message": msg, "type": "invalid_request_error", "param": nil, "code": "invalid_api_key",
	}})
	info := Get(c)
	info.ErrorCode, info.Error = "invalid_api_key", msg
}

// lookup finds the key whose digest matches, comparing in constant time
// against every configured digest, so that neither the comparison nor the
// number of comparisons depends on how close a guess came.
func lookup(keys map[string]string, key string) (string, bool) {
	sum := sha256.Sum256([]byte(key))
	digest := []byte(hex.EncodeToString(sum[:]))
	name, found := "", 0
	for d, n := range keys {
		if subtle.ConstantTimeCompare(digest, []byte(d)) == 1 {
			name, found = n, 1
		}
	}
	return name, found == 1
}
