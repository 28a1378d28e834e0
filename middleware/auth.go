package middleware

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// Auth requires a known API key, sent as "Authorization: Bearer KEY" or
// "x-api-key: KEY", and records the key's name (never the key) in Info.
// keys maps the hex SHA-256 of each secret to its name: the presented key
// is hashed and looked up, so the secret is never compared byte by byte
// and the config may hold only hashes.
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
		sum := sha256.Sum256([]byte(key))
		name, ok := keys[hex.EncodeToString(sum[:])]
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
