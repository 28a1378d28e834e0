// Package gateway is the HTTP side of the gateway: routes, handlers, the
// SSE writer, model routing and the server's lifecycle.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/limit"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
)

// Server serves one configuration, and hands over to the next on a reload
// (Reload): each configuration is a generation of Server, and requests keep
// the generation they started on until they end. What generations share
// is in shared.
type Server struct {
	*shared
	cfg    *config.Config
	reg    *registry
	lim    *limiter
	redact *strings.Replacer
	engine *gin.Engine
}

// shared is the process's side of the gateway, which a reload does not
// replace.
type shared struct {
	log *slog.Logger
	// started is reported as the creation time of every model.
	started time.Time
	streams *streamHub
	metrics *metrics
	// Frames rendered once: the retry: line of events URLs, and the
	// terminal events one replica may write for a stream another produces.
	retryFrame, lostLine, cancelledLine []byte

	// stopping is cancelled, with errShutdown as its cause, when streams in
	// flight must end because the drain timeout ran out.
	stopping    context.Context
	stopStreams context.CancelCauseFunc

	// cur is the generation new requests go to.
	cur atomic.Pointer[Server]
	// reloading serialises reloads.
	reloading sync.Mutex
	// built is every provider any generation built, to close at the end.
	builtMu sync.Mutex
	built   []providers.Provider
}

// New builds a server for cfg, which must have passed validation.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	store, err := newStore(cfg.RateLimit, log)
	if err != nil {
		return nil, err
	}
	streams, err := newStreamHub(cfg, log)
	if err != nil {
		return nil, errors.Join(err, store.Close())
	}
	sh := &shared{log: log, started: time.Now(), streams: streams,
		retryFrame: fmt.Appendf(nil, "retry: %d\n\n", cfg.Streams.ReconnectDelay.Std().Milliseconds()),
		lostLine:   (&nativeFormat{}).failed(nil, apiProducerLost), cancelledLine: (&nativeFormat{}).failed(nil, apiCancelled)}
	sh.stopping, sh.stopStreams = context.WithCancelCause(context.Background())
	s, err := sh.build(cfg, store, nil)
	if err != nil {
		return nil, errors.Join(err, store.Close(), streams.close())
	}
	sh.metrics = newMetrics(s)
	sh.cur.Store(s)
	if !cfg.Auth.AuthEnabled() {
		if host, _, _ := net.SplitHostPort(cfg.Server.Listen); !isLoopback(host) {
			log.Warn("auth is off on a non-loopback address: anyone who can reach it can use every model", "listen", cfg.Server.Listen)
		}
	}
	return s, nil
}

// build makes a generation serving cfg. prev, the generation it replaces
// (nil for the first), lends it what is unchanged: providers with the same
// settings (and their connections), the health of their deployments, and
// provider pacers.
func (sh *shared) build(cfg *config.Config, store limit.Store, prev *Server) (*Server, error) {
	var prevReg *registry
	var prevCfg *config.Config
	if prev != nil {
		prevReg, prevCfg = prev.reg, prev.cfg
	}
	reg, secrets, fresh, err := buildRegistry(cfg, prevReg, prevCfg)
	if err != nil {
		return nil, err
	}
	sh.builtMu.Lock()
	sh.built = append(sh.built, fresh...)
	sh.builtMu.Unlock()
	var prevLim *limiter
	if prev != nil {
		prevLim = prev.lim
	}
	s := &Server{shared: sh, cfg: cfg, reg: reg, lim: newLimiter(cfg, store, prevLim, prevCfg), redact: newRedactor(secrets)}
	for name, pc := range cfg.Providers {
		// Said once per provider built, not again at every reload.
		if prev != nil && prev.reg.providers[name] == reg.providers[name] {
			continue
		}
		if u, ok := reg.providers[name].(unavailable); ok && u.Unavailable() != nil {
			sh.log.Warn("provider is not usable until configured; its models answer 503", "provider", name, "type", pc.Type, "reason", u.Unavailable().Error())
		}
	}

	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// Believe X-Forwarded-For only from the configured proxies (by
	// default none: the connection's address is the client's).
	if err := e.SetTrustedProxies(cfg.Auth.TrustedProxies); err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	e.Use(
		middleware.RequestID(),
		middleware.AccessLog(sh.log),
		s.countRequests,
		middleware.Recovery(sh.log),
		middleware.CORS(cfg.Server.CORS.AllowedOrigins),
		middleware.BodyLimit(cfg.Server.MaxBodyBytes),
	)
	v1 := e.Group("/v1")
	if cfg.Auth.AuthEnabled() {
		v1.Use(middleware.Auth(s.lim.digests))
	}
	v1.POST("/stream", s.handleStream)
	v1.POST("/streams", s.handleCreateStream)
	v1.POST("/chat/completions", s.handleChat)
	v1.GET("/models", s.handleModels)
	// An events URL carries its own token (EventSource cannot send
	// headers), so these check access themselves.
	e.GET("/v1/streams/:id", s.handleStreamEvents)
	e.DELETE("/v1/streams/:id", s.handleCancelStream)
	e.GET("/metrics", s.serveMetrics)
	admin := e.Group("/admin")
	if cfg.Auth.AuthEnabled() {
		admin.Use(middleware.Auth(s.lim.digests))
	}
	admin.GET("/deployments", s.handleDeployments)
	if cfg.Server.PlaygroundEnabled() {
		servePlayground(e)
	}
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", s.handleReady)
	e.NoRoute(func(c *gin.Context) {
		writeError(c, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "not_found", Message: fmt.Sprintf("no route for %s %s", c.Request.Method, c.Request.URL.Path)})
	})
	e.NoMethod(func(c *gin.Context) {
		writeError(c, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Code: "method_not_allowed", Message: fmt.Sprintf("%s is not allowed on %s", c.Request.Method, c.Request.URL.Path)})
	})
	s.engine = e
	return s, nil
}

// countRequests and serveMetrics reach the metrics through the generation,
// which has them only once the first generation is built.
func (s *Server) countRequests(c *gin.Context) { s.metrics.countRequests(c) }
func (s *Server) serveMetrics(c *gin.Context)  { s.metrics.serve(c) }

// Close ends the streams still being generated (with a server_shutdown
// error event) and releases what the server holds beyond its handlers:
// connections to Redis and to upstreams. Call it after Serve returns, or
// once a test's handlers are done.
func (s *Server) Close() error {
	s.stopStreams(errShutdown)
	err := errors.Join(s.streams.close(), s.cur.Load().lim.store.Close())
	s.builtMu.Lock()
	defer s.builtMu.Unlock()
	for _, p := range s.built {
		closeIdle(p)
	}
	return err
}

// closeIdle drops a provider's idle upstream connections, if it has any.
func closeIdle(p providers.Provider) {
	if c, ok := p.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Handler returns the HTTP handler of all routes, which serves each
// request with the current generation.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.cur.Load().engine.ServeHTTP(w, r) })
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully:
// it stops accepting connections, gives streams in flight the configured
// drain time to finish, ends those still running with a server_shutdown
// error event, and returns once every handler has returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.Server.ReadHeaderTimeout.Std(),
		IdleTimeout:       s.cfg.Server.IdleTimeout.Std(),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.Server.H2C {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	}
	if addr := s.cfg.Server.PprofListen; addr != "" {
		stop, err := s.servePprof(addr)
		if err != nil {
			return err
		}
		defer stop()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// The drain time is the current configuration's: it can be reloaded.
	drainTime := s.cur.Load().cfg.Server.ShutdownTimeout
	s.log.Info("shutting down: draining streams", "drain_timeout", drainTime.String())
	drain, cancel := context.WithTimeout(context.Background(), drainTime.Std())
	defer cancel()
	err := srv.Shutdown(drain)
	if err == nil {
		// Streams outliving their connections get the same drain time.
		err = s.streams.wait(drain)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("drain timeout reached: ending the remaining streams")
		s.stopStreams(errShutdown)
		// Handlers now write their error event and return promptly.
		grace, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err = srv.Shutdown(grace); err != nil {
			err = errors.Join(err, srv.Close())
		}
		err = errors.Join(err, s.streams.wait(grace))
	}
	<-served // http.ErrServerClosed
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("shut down cleanly")
	return nil
}

// ListenAndServe listens on the configured address and serves until ctx is
// cancelled.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.log.Info("gateway listening", "addr", ln.Addr().String(), "models", strings.Join(s.reg.names, ","))
	return s.Serve(ctx, ln)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
