package middleware

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/failure"
)

// Keys are the keys a request may carry: the configured ones, indexed by
// the hex SHA-256 of their secrets (so the config may hold only hashes),
// and those made at runtime.
type Keys struct {
	digests []digestOf
	names   map[string]bool
	runtime Runtime
}

// Runtime finds a key made at runtime by the hex SHA-256 of its secret.
type Runtime interface {
	Lookup(digest string) (name string, ok bool)
}

// NewKeys indexes the configured keys by digest; runtime may be nil.
func NewKeys(keys map[string]config.Key, runtime Runtime) Keys {
	k := Keys{digests: make([]digestOf, 0, len(keys)), names: make(map[string]bool, len(keys)), runtime: runtime}
	for name, key := range keys {
		k.digests = append(k.digests, digestOf{digest: []byte(key.Digest()), name: name})
		k.names[name] = true
	}
	return k
}

// digestOf is a configured key's digest (hex, as bytes to compare
// without a conversion per request) and name.
type digestOf struct {
	digest []byte
	name   string
}

// Deny answers a request without a valid key, in the dialect's own error
// envelope (write).
type Deny func(c *gin.Context, e *failure.Error)

// Auth requires a known API key, sent as "Authorization: Bearer KEY" or
// "x-api-key: KEY", and records the key's name (never the key) in Info.
// A request without one is answered 401 by deny.
func Auth(keys Keys, deny Deny) gin.HandlerFunc {
	return func(c *gin.Context) {
		name, e := keys.Identify(c.Request)
		if e != nil {
			Refuse(c, e, deny)
			return
		}
		Get(c).KeyName = name
		c.Next()
	}
}

// Refuse answers 401 with e (from Identify) through deny, and stops the
// request's handlers.
func Refuse(c *gin.Context, e *failure.Error, deny Deny) {
	c.Header("WWW-Authenticate", `Bearer realm="gateway"`)
	info := Get(c)
	info.ErrorCode, info.Error = e.Code, e.Message
	deny(c, e)
	c.Abort()
}

// ErrNoKey is what Identify says of a request that carries no key.
const ErrNoKey = "missing API key: send \"Authorization: Bearer YOUR_KEY\" or \"x-api-key: YOUR_KEY\""

// Unauthorized is a 401 saying msg.
func Unauthorized(msg string) *failure.Error {
	return &failure.Error{Status: http.StatusUnauthorized, Type: failure.TypeInvalidRequest, Code: "invalid_api_key", Message: msg}
}

// Identify returns the name of the key r carries, or why it carries no
// valid one (a message of ErrNoKey when it carries none).
func (keys Keys) Identify(r *http.Request) (string, *failure.Error) {
	key := r.Header.Get("x-api-key")
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, token, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", Unauthorized("the Authorization header must be \"Bearer YOUR_KEY\"")
		}
		key = strings.TrimSpace(token)
	}
	if key == "" {
		return "", Unauthorized(ErrNoKey)
	}
	name, ok := keys.lookup(key)
	if !ok {
		return "", Unauthorized("invalid API key")
	}
	return name, nil
}

// lookup finds the key whose digest matches, comparing in constant time
// against every configured digest, so that neither the comparison nor the
// number of comparisons depends on how close a guess came. Runtime keys,
// which may be many, are looked up by digest in a map: what a map's
// timing could tell is about the SHA-256 of a guess, not the guess.
func (keys Keys) lookup(key string) (string, bool) {
	sum := sha256.Sum256([]byte(key))
	var digest [2 * sha256.Size]byte
	hex.Encode(digest[:], sum[:])
	name, found := "", 0
	for _, d := range keys.digests {
		if subtle.ConstantTimeCompare(digest[:], d.digest) == 1 {
			name, found = d.name, 1
		}
	}
	if found == 0 && keys.runtime != nil {
		// A runtime key whose name the config took since (the admin API
		// refuses such names) would act as the config's key: refuse it.
		if name, ok := keys.runtime.Lookup(string(digest[:])); ok && !keys.names[name] {
			return name, true
		}
		return "", false
	}
	return name, found == 1
}
