package middleware

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/failure"
)

// Origins refuses (403) a request from a web page on an origin that is
// neither the gateway's own nor one of allowed (server.cors): without it,
// any page a developer visits could drive a gateway on their machine, and
// spend its upstream keys, with requests that need no preflight. Requests
// without an Origin header (SDKs, curl, servers) pass.
func Origins(allowed []string) gin.HandlerFunc {
	anyOrigin := slices.Contains(allowed, "*")
	return func(c *gin.Context) {
		origin := c.GetHeader("Origin")
		if origin == "" || anyOrigin || slices.Contains(allowed, origin) || sameOrigin(origin, c.Request.Host) {
			c.Next()
			return
		}
		refuse(c, &failure.Error{Status: http.StatusForbidden, Type: failure.TypeInvalidRequest, Code: "origin_not_allowed",
			Message: "requests from the web origin " + failure.Quote(origin) + " are not allowed: add it to server.cors.allowed_origins"})
	}
}

// sameOrigin reports whether origin is the gateway's own address as the
// browser reached it.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && strings.EqualFold(u.Host, host)
}

// LoopbackHosts refuses (421) a request whose Host is not a loopback
// name. A gateway listening on loopback serves only this machine; a page
// that makes its own domain resolve to 127.0.0.1 (DNS rebinding) would
// otherwise reach it as a same-origin site.
func LoopbackHosts() gin.HandlerFunc {
	return func(c *gin.Context) {
		if isLoopbackHost(c.Request.Host) {
			c.Next()
			return
		}
		refuse(c, &failure.Error{Status: http.StatusMisdirectedRequest, Type: failure.TypeInvalidRequest, Code: "host_not_allowed",
			Message: "this gateway listens on loopback and answers only to localhost, 127.0.0.1 or [::1], not " + failure.Quote(c.Request.Host)})
	}
}

func isLoopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// refuse answers e in the gateway's default envelope and stops the
// request's handlers.
func refuse(c *gin.Context, e *failure.Error) {
	Get(c).Failed(e)
	failure.Write(c.Writer, e)
	c.Abort()
}
