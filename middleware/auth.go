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
		name, err := Identify(keys, c.Request)
		if err != "" {
			Deny(c, err)
			return
		}
		Get(c).KeyName = name
		c.Next()
	}
}

// ErrNoKey is what Identify says of a request that carries no key.
const ErrNoKey = "missing API key: send \"Authorization: Bearer YOUR_KEY\" or \"x-api-key: YOUR_KEY\""

// Identify returns the name of the key r carries, or why it carries no
// valid one (ErrNoKey when it carries none).
func Identify(keys map[string]string, r *http.Request) (name, err string) {
	key := r.Header.Get("x-api-key")
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", "the Authorization header must be \"Bearer YOUR_KEY\""
		}
		key = strings.TrimSpace(token)
	}
	if key == "" {
		return "", ErrNoKey
	}
	name, ok := lookup(keys, key)
	if !ok {
		return "", "invalid API key"
	}
	return name, ""
}

// Deny answers 401 with msg in OpenAI's error shape.
func Deny(c *gin.Context, msg string) {
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
