// Package gateway is the process: the HTTP server, configuration
// generations and hot reload, the route table (one line per API dialect),
// readiness, the metrics registry and the one Redis client constructor.
// Serving a request is the engine's work and its dialect's.
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

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/streamgate/gateway/apikeys"
	"github.com/streamgate/gateway/budget"
	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/ledger"
	"github.com/streamgate/gateway/limit"
	"github.com/streamgate/gateway/metrics"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/responsestore"
	"github.com/streamgate/gateway/resumable"
)

// Server is the gateway process. It serves each request with the current
// configuration generation; a reload (Reload) builds the next one, and
// requests in flight keep the generation they started on until they end.
type Server struct {
	log *slog.Logger
	// started is reported as the creation time of every model.
	started time.Time
	// first is the configuration the process started with: the settings a
	// reload cannot change (listener, storage) are read from it.
	first *config.Config
	store limit.Store
	// budgets keeps key budgets' windows, built after the ledger, which
	// seeds them.
	budgets budget.Store
	hub     *resumable.Hub
	// responses keeps stored Responses API responses; built once, like
	// the hub (a reload does not move it).
	responses      responsestore.Store
	closeResponses func() error
	// ledger records usage (nil when off), in usage, which the admin
	// API reads; built once too.
	ledger *ledger.Ledger
	usage  *ledger.DB
	// keys are the keys made at runtime, kept in the ledger's database
	// (nil without one).
	keys *apikeys.Ring
	// pending counts requests in progress per client, bodies the bytes
	// of bodies being read: both bound what slow clients hold, across
	// generations.
	pending *limit.Pending
	bodies  *middleware.Bodies
	metrics *metrics.Metrics
	// now is the clock of routing health and stream retention; time.Now
	// but in tests.
	now func() time.Time
	// traces exports spans (nil with tracing off); traceOpts are added
	// to its options (tests).
	traces    *sdktrace.TracerProvider
	traceOpts []sdktrace.TracerProviderOption

	// stopping is cancelled, with failure.ErrShutdown as its cause, when
	// streams in flight must end because the drain timeout ran out.
	stopping    context.Context
	stopStreams context.CancelCauseFunc

	// cur is the generation new requests go to.
	cur atomic.Pointer[generation]
	// reloading serialises reloads.
	reloading sync.Mutex
	// built is every provider any generation built, to close at the end.
	builtMu sync.Mutex
	built   []providers.Provider
}

// Option changes how New builds a Server.
type Option func(*Server)

// WithClock makes routing health (cooldowns) and stream retention read
// now instead of time.Now; for tests.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithTraceOptions adds opts to the tracer provider's, when tracing is
// on; for tests, which add a span processor to learn when spans end.
func WithTraceOptions(opts ...sdktrace.TracerProviderOption) Option {
	return func(s *Server) { s.traceOpts = append(s.traceOpts, opts...) }
}

// New builds a server for cfg, which must have passed validation.
func New(cfg *config.Config, log *slog.Logger, opts ...Option) (*Server, error) {
	s := &Server{log: log, started: time.Now(), first: cfg, metrics: metrics.New(), now: time.Now,
		pending: limit.NewPending(), bodies: middleware.NewBodies(cfg.Server.MaxPendingBodyBytes)}
	for _, o := range opts {
		o(s)
	}
	s.stopping, s.stopStreams = context.WithCancelCause(context.Background())
	store, err := newStore(cfg.RateLimit, log)
	if err != nil {
		return nil, err
	}
	s.store = store
	hopts := resumable.HubOptions{Log: log, Observer: s.metrics, Stopping: s.stopping, Now: s.now}
	if cfg.Streams.Backend == "redis" {
		c, err := newPipelinedClient(cfg.Streams.RedisConfig(cfg.RateLimit), resumable.RedisPool)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("streams: %w", err), store.Close())
		}
		hopts.Redis = c
	}
	s.hub = resumable.NewHub(cfg.Streams, hopts)
	s.closeResponses = func() error { return nil }
	if r := cfg.Responses; r.Backend == "redis" {
		c, err := newRedisClient(cfg.Streams.RedisConfig(cfg.RateLimit), 0)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("responses: %w", err), store.Close(), s.hub.Close())
		}
		rs := responsestore.NewRedis(c, r.Retention.Std())
		s.responses, s.closeResponses = rs, rs.Close
	} else {
		s.responses = responsestore.NewMemory(r.Retention.Std(), r.MaxBytes, s.now)
	}
	if err := s.openLedger(cfg.Ledger); err != nil {
		return nil, errors.Join(err, store.Close(), s.hub.Close(), s.closeResponses())
	}
	if s.usage != nil {
		ctx, cancel := context.WithTimeout(context.Background(), ledgerOpenTimeout)
		s.keys, err = apikeys.Open(ctx, s.usage, log)
		cancel()
		if err != nil {
			return nil, errors.Join(fmt.Errorf("runtime keys: %w", err), store.Close(), s.hub.Close(), s.closeResponses(), s.closeLedger())
		}
	}
	if s.budgets, err = newBudgets(cfg.RateLimit, s.usage, log); err != nil {
		return nil, errors.Join(fmt.Errorf("budgets: %w", err), store.Close(), s.hub.Close(), s.closeResponses(), s.closeLedger())
	}
	if s.traces, err = newTracerProvider(context.Background(), cfg.Tracing, s.traceOpts...); err != nil {
		return nil, errors.Join(err, store.Close(), s.hub.Close(), s.closeResponses(), s.closeLedger(), s.budgets.Close())
	}
	g, err := s.build(cfg, nil)
	if err != nil {
		return nil, errors.Join(err, store.Close(), s.hub.Close(), s.closeResponses(), s.closeLedger(), s.budgets.Close(), s.closeTraces())
	}
	s.cur.Store(g)
	s.metrics.Register(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_stream_store_bytes",
			Help: "Bytes held by the stream logs in this replica's memory (bounded by streams.max_total_bytes).",
		}, func() float64 { _, b := s.hub.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_stream_store_streams",
			Help: "Stream logs held in this replica's memory, live or finished and still retained.",
		}, func() float64 { n, _ := s.hub.Stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_requests_in_progress",
			Help: "API requests in progress on this replica, counted from their headers (bodies being read included).",
		}, func() float64 { return float64(s.pending.Total()) }),
		cooldownCollector{s},
	)
	if !cfg.Auth.AuthEnabled() {
		if host, _, _ := net.SplitHostPort(cfg.Server.Listen); !isLoopback(host) {
			log.Warn("auth is off on a non-loopback address: anyone who can reach it can use every model", "listen", cfg.Server.Listen)
		}
	}
	return s, nil
}

// Close ends the streams still being generated (with a server_shutdown
// error event) and releases what the server holds beyond its handlers:
// connections to Redis and to upstreams. Call it after Serve returns, or
// once a test's handlers are done.
func (s *Server) Close() error {
	s.stopStreams(failure.ErrShutdown)
	if s.keys != nil {
		s.keys.Close()
	}
	// The ledger last: the streams the hub ends record their rows.
	// Traces after the streams' ends, which end their spans.
	err := errors.Join(s.hub.Close(), s.store.Close(), s.budgets.Close(), s.closeResponses(), s.closeLedger(), s.closeTraces())
	s.builtMu.Lock()
	defer s.builtMu.Unlock()
	for _, p := range s.built {
		providers.CloseIdle(p)
	}
	return err
}

// traceFlushTimeout bounds sending the last spans at shutdown.
const traceFlushTimeout = 5 * time.Second

// closeTraces sends the spans not yet exported and stops the exporter.
func (s *Server) closeTraces() error {
	if s.traces == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
	defer cancel()
	if err := s.traces.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	return nil
}

// ledgerOpenTimeout bounds connecting to the ledger's database and
// migrating it at start.
const ledgerOpenTimeout = 30 * time.Second

// openLedger opens the usage ledger cfg configures, if any.
func (s *Server) openLedger(cfg config.Ledger) error {
	ctx, cancel := context.WithTimeout(context.Background(), ledgerOpenTimeout)
	defer cancel()
	var err error
	switch cfg.Backend {
	case config.LedgerSQLite:
		s.usage, err = ledger.OpenSQLite(ctx, cfg.Path)
	case config.LedgerPostgres:
		s.usage, err = ledger.OpenPostgres(ctx, cfg.DSN.Reveal())
	default:
		return nil
	}
	if err != nil {
		// The DSN may be in the driver's error: never show it.
		msg := err.Error()
		if dsn := cfg.DSN.Reveal(); dsn != "" {
			msg = strings.ReplaceAll(msg, dsn, config.Redacted)
		}
		return fmt.Errorf("ledger: %s", msg)
	}
	s.ledger = ledger.New(s.usage, ledger.Options{FlushInterval: cfg.FlushInterval.Std(), BatchSize: cfg.BatchSize,
		QueueSize: cfg.QueueSize, Log: s.log, Observer: s.metrics})
	s.metrics.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gateway_ledger_queued_rows",
		Help: "Usage ledger rows waiting to be written (bounded by ledger.queue_size).",
	}, func() float64 { return float64(s.ledger.Queued()) }))
	s.log.Info("usage ledger open", "backend", cfg.Backend, "schema_version", ledger.SchemaVersion)
	return nil
}

// ledgerCloseTimeout bounds writing the rows still queued at exit.
const ledgerCloseTimeout = 10 * time.Second

func (s *Server) closeLedger() error {
	if s.ledger == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ledgerCloseTimeout)
	defer cancel()
	return s.ledger.Close(ctx)
}

// Handler returns the HTTP handler of all routes, which serves each
// request with the current generation.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.cur.Load().routes.ServeHTTP(w, r) })
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully:
// it stops accepting connections, gives streams in flight the configured
// drain time to finish, ends those still running with a server_shutdown
// error event, and returns once every handler has returned.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	sc := s.first.Server
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: sc.ReadHeaderTimeout.Std(),
		IdleTimeout:       sc.IdleTimeout.Std(),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if sc.H2C {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	}
	if addr := sc.PprofListen; addr != "" {
		stop, err := s.servePprof(addr)
		if err != nil {
			return err
		}
		defer stop()
	}
	if sc.Metrics.Listen != "" {
		stop, err := s.serveMetricsListener(sc.Metrics)
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
		err = s.hub.Wait(drain)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("drain timeout reached: ending the remaining streams")
		s.stopStreams(failure.ErrShutdown)
		// Handlers now write their error event and return promptly.
		grace, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err = srv.Shutdown(grace); err != nil {
			err = errors.Join(err, srv.Close())
		}
		err = errors.Join(err, s.hub.Wait(grace))
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
	ln, err := net.Listen("tcp", s.first.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.log.Info("gateway listening", "addr", ln.Addr().String(), "models", strings.Join(s.cur.Load().reg.Models(), ","))
	return s.Serve(ctx, ln)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
