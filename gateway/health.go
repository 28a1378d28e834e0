package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/providers"
)

// pinger is a dependency that can say whether it is reachable.
type pinger interface {
	Ping(ctx context.Context) error
}

// handleReady serves GET /readyz: 200 when the gateway can serve (its
// config loaded, at least one provider usable, Redis reachable when
// configured), 503 otherwise, with every check's result. /healthz only
// says that the process is alive: a Kubernetes liveness probe must not
// restart a gateway because Redis is down.
func (s *Server) handleReady(c *gin.Context, g *generation) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), time.Second)
	defer cancel()
	checks := gin.H{}
	ready := true
	fail := func(name, why string) { checks[name], ready = why, false }

	usable := 0
	for _, p := range g.reg.Providers() {
		if providers.Unusable(p) == nil {
			usable++
		}
	}
	if usable == 0 {
		fail("providers", "no provider is usable: configure an API key")
	} else {
		checks["providers"] = "ok"
	}
	deps := map[string]pinger{}
	if p, ok := s.store.(pinger); ok {
		deps["rate_limit_redis"] = p
	}
	if r := s.hub.Redis(); r != nil {
		deps["streams_redis"] = r
	}
	for name, p := range deps {
		if err := p.Ping(ctx); err != nil {
			fail(name, g.redact.Replace(err.Error()))
		} else {
			checks[name] = "ok"
		}
	}
	status, word := http.StatusOK, "ready"
	if !ready {
		status, word = http.StatusServiceUnavailable, "not_ready"
	}
	c.JSON(status, gin.H{"status": word, "checks": checks})
}
