package gateway

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/admission"
	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/api/anthropic"
	"github.com/streamgate/gateway/api/native"
	"github.com/streamgate/gateway/api/openai"
	"github.com/streamgate/gateway/api/responses"
	"github.com/streamgate/gateway/apikeys"
	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/engine"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/tracing"
	"github.com/streamgate/gateway/upstream"
)

// generation is one configuration being served: its registry (providers,
// models, deployments' health), admission policies, keys, engine and
// routes. A request keeps the generation it started on through its
// handler, its producer and its retries, so nothing needs locking on the
// hot path.
type generation struct {
	cfg    *config.Config
	reg    *upstream.Registry
	keys   middleware.Keys
	redact *strings.Replacer
	engine *engine.Engine
	routes *gin.Engine
	// ring holds the keys made at runtime (nil without a ledger).
	ring *apikeys.Ring
}

// dialects are the inbound APIs: a new one is a package under api/ and
// one line here.
func dialects(e *engine.Engine) []api.Dialect {
	return []api.Dialect{
		native.New(e),
		openai.New(e),
		anthropic.New(e),
		responses.New(e),
	}
}

// build makes a generation serving cfg. prev, the generation it replaces
// (nil for the first), lends it what is unchanged: providers with the same
// settings (and their connections), the health of their deployments, and
// provider pacers.
func (s *Server) build(cfg *config.Config, prev *generation) (*generation, error) {
	secrets := upstream.Secrets(cfg)
	if p := cfg.RateLimit.Redis.Password.Reveal(); p != "" {
		secrets = append(secrets, p)
	}
	var lookup middleware.Runtime
	var runtime admission.RuntimeKeys
	if s.keys != nil {
		lookup, runtime = s.keys, s.keys
	}
	g := &generation{cfg: cfg, keys: middleware.NewKeys(cfg.Keys, lookup), redact: newRedactor(secrets), ring: s.keys}
	var prevReg *upstream.Registry
	if prev != nil {
		prevReg = prev.reg
	}
	reg, err := upstream.Build(cfg, prevReg, upstream.Options{Log: s.log, Observer: s.metrics, Redact: g.redact.Replace, Now: s.now})
	if err != nil {
		return nil, err
	}
	g.reg = reg
	s.builtMu.Lock()
	s.built = append(s.built, reg.Fresh()...)
	s.builtMu.Unlock()
	g.engine = engine.New(engine.Options{
		Config: cfg, Log: s.log, Registry: reg, Admitter: admission.New(cfg, admission.Parts{Store: s.store, Budgets: s.budgets, Pending: s.pending, Obs: s.metrics, Log: s.log, Now: s.now, Runtime: runtime}),
		Metrics: s.metrics, Hub: s.hub, Responses: s.responses, Ledger: s.ledger, Keys: g.keys, Redact: g.redact.Replace, Stopping: s.stopping, Started: s.started,
	})
	if g.routes, err = s.routes(g); err != nil {
		return nil, err
	}
	return g, nil
}

// routes is the route table of generation g.
func (s *Server) routes(g *generation) (*gin.Engine, error) {
	cfg := g.cfg
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// Believe X-Forwarded-For only from the configured proxies (by
	// default none: the connection's address is the client's).
	if err := e.SetTrustedProxies(cfg.Auth.TrustedProxies); err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	e.Use(middleware.RequestID(), middleware.AccessLog(s.log))
	if s.traces != nil {
		e.Use(middleware.Trace(s.traces.Tracer(tracing.Scope), "/healthz", "/readyz", "/metrics"))
	}
	e.Use(
		s.metrics.CountRequests,
		middleware.Recovery(s.log),
	)
	if host, _, _ := net.SplitHostPort(s.first.Server.Listen); isLoopback(host) {
		e.Use(middleware.LoopbackHosts())
	}
	e.Use(
		middleware.CORS(cfg.Server.CORS.AllowedOrigins),
		middleware.Origins(cfg.Server.CORS.AllowedOrigins),
		s.bodies.Limit(cfg.Server.MaxBodyBytes, cfg.Server.BodyTimeout.Std()),
	)
	for _, d := range dialects(g.engine) {
		authed := e.Group("/v1")
		if cfg.Auth.AuthEnabled() {
			authed.Use(middleware.Auth(g.keys, d.WriteError))
		}
		authed.Use(g.engine.Hold(d.WriteError))
		d.Register(authed, e.Group("/v1"))
	}
	if cfg.Server.Metrics.Listen == "" {
		e.GET("/metrics", s.serveMetrics(cfg.Server.Metrics))
	}
	admin := e.Group("/admin")
	if cfg.Auth.AuthEnabled() {
		admin.Use(middleware.Auth(g.keys, api.WriteError), requireAdmin(cfg.Keys, s.keys))
	}
	admin.GET("/deployments", g.handleDeployments)
	admin.GET("/usage", s.handleUsage)
	admin.GET("/budgets", g.handleBudgets)
	admin.GET("/keys", g.listKeys)
	admin.POST("/keys", g.createKey)
	admin.GET("/keys/:name", g.getKey)
	admin.PATCH("/keys/:name", g.updateKey)
	admin.DELETE("/keys/:name", g.revokeKey)
	servePages(e, cfg.Server.PlaygroundEnabled())
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", func(c *gin.Context) { s.handleReady(c, g) })
	e.NoRoute(func(c *gin.Context) {
		api.WriteError(c, &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "not_found", Message: fmt.Sprintf("no route for %s %s", c.Request.Method, failure.Truncate(c.Request.URL.Path))})
	})
	e.NoMethod(func(c *gin.Context) {
		api.WriteError(c, &failure.Error{Status: http.StatusMethodNotAllowed, Type: failure.TypeInvalidRequest, Code: "method_not_allowed", Message: fmt.Sprintf("%s is not allowed on %s", c.Request.Method, failure.Truncate(c.Request.URL.Path))})
	})
	return e, nil
}

// minSecret is the shortest value redacted as a secret. A shorter one (a
// local server's key of "x" or "none") guards nothing, and replacing it
// everywhere would mangle every message it occurs in ("ma[REDACTED]imum").
const minSecret = 8

// requireAdmin lets through only requests authenticated with an admin
// key (keys.NAME.admin, or a runtime key made with admin): others get
// 403.
func requireAdmin(keys map[string]config.Key, runtime *apikeys.Ring) gin.HandlerFunc {
	isAdmin := func(name string) bool {
		if k, ok := keys[name]; ok {
			return k.Admin
		}
		if runtime == nil {
			return false
		}
		k, ok := runtime.Live(name)
		return ok && k.Admin
	}
	return func(c *gin.Context) {
		if name := middleware.Get(c).KeyName; isAdmin(name) {
			c.Next()
			return
		}
		api.WriteError(c, &failure.Error{Status: http.StatusForbidden, Type: failure.TypeInvalidRequest, Code: "admin_key_required",
			Message: "the admin endpoints need a key with admin: true"})
		c.Abort()
	}
}

// newRedactor replaces every configured secret with [REDACTED]. Errors and
// log lines go through it before they leave the process.
func newRedactor(secrets []string) *strings.Replacer {
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		if len(s) >= minSecret {
			pairs = append(pairs, s, config.Redacted)
		}
	}
	return strings.NewReplacer(pairs...)
}
