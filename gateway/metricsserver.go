package gateway

import (
	"crypto/subtle"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/middleware"
)

// serveMetrics answers GET /metrics, requiring the bearer token when one
// is configured.
func (s *Server) serveMetrics(mc config.Metrics) gin.HandlerFunc {
	token := []byte(mc.Token.Reveal())
	return func(c *gin.Context) {
		if len(token) > 0 {
			got, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) != 1 {
				middleware.Refuse(c, middleware.Unauthorized("GET /metrics needs \"Authorization: Bearer TOKEN\" with server.metrics.token"), api.WriteError)
				return
			}
		}
		s.metrics.Serve(c)
	}
}

// serveMetricsListener serves /metrics alone on its own address
// (server.metrics.listen) until stop is called.
func (s *Server) serveMetricsListener(mc config.Metrics) (stop func(), err error) {
	e := gin.New()
	e.GET("/metrics", s.serveMetrics(mc))
	return s.serveAside("metrics", mc.Listen, e)
}
