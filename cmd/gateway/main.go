// Command gateway runs the AI response streaming gateway.
//
//	gateway                      serve with ./config.yaml
//	gateway -config FILE         serve with FILE
//	gateway -listen ADDR         override server.listen
//	gateway -check-config        validate the config file and exit
//
// The config is reloaded on SIGHUP and when the file changes (checked every
// -watch-interval; 0 turns the check off).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/gateway"
	"github.com/streamgate/gateway/internal/gcfloor"
	"github.com/streamgate/gateway/internal/logbuf"
	"github.com/streamgate/gateway/internal/logevery"
)

func main() {
	// Process-wide settings of libraries, made once, here: gin's debug
	// output is for development servers.
	gin.SetMode(gin.ReleaseMode)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ce *config.Error
		if !errors.As(err, &ce) && !errors.Is(err, flag.ErrHelp) {
			err = fmt.Errorf("gateway: %w", err)
		}
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
}

// run serves until ctx is cancelled (SIGINT or SIGTERM in main).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "config file")
	listen := fs.String("listen", "", "listen address, overriding server.listen (e.g. :8080)")
	check := fs.Bool("check-config", false, "validate the config file, print every problem, and exit")
	watch := fs.Duration("watch-interval", 2*time.Second, "how often to check the config file for changes to reload (0: only on SIGHUP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}

	load := func() (*config.Config, error) {
		cfg, err := config.Load(*path)
		if err == nil && *listen != "" {
			cfg.Server.Listen = *listen
		}
		return cfg, err
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	if *check {
		fmt.Fprintf(stdout, "%s: ok (%d providers, %d models)\n", *path, len(cfg.Providers), len(cfg.Models))
		return nil
	}

	logs := logbuf.New(stderr, time.Duration(cfg.Server.Log.FlushInterval))
	// Deferred first, so it runs last: the lines of the shutdown too.
	defer logs.Close()
	log := newLogger(cfg.Server.Log, logs)
	// go-redis logs reconnection attempts itself, to stderr; route them
	// to debug level, since the stores already warn about outages. Its
	// logger is global: set once, as the process starts serving.
	redis.SetLogger(redisLogger{log})
	// OpenTelemetry reports export failures (a collector down) to a
	// global handler, by default the standard logger: to ours, at most
	// a line a second.
	otel.SetErrorHandler(&otelErrors{log: log})
	srv, err := gateway.New(cfg, log)
	if err != nil {
		return err
	}
	// The collector's floor is process-wide, so it is set here rather
	// than by the server (a test's servers share one process).
	defer gcfloor.Start(uint64(cfg.Server.GCHeapFloorBytes)).Stop()
	// Reloads run until the server has stopped.
	rctx, stopReloads := context.WithCancel(ctx)
	var reloads sync.WaitGroup
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reloads.Go(func() {
		for {
			select {
			case <-rctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading the config", "file", *path)
				_ = srv.ReloadWith(load)
			}
		}
	})
	if *watch > 0 {
		defer srv.WatchConfig(*path, *watch, load)()
	}
	err = srv.ListenAndServe(ctx)
	signal.Stop(hup)
	stopReloads()
	reloads.Wait()
	return errors.Join(err, srv.Close())
}

func newLogger(c config.Log, w *logbuf.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(logbuf.Handler(h, w))
}

// otelErrors logs OpenTelemetry's errors as warnings, one a second.
type otelErrors struct {
	log   *slog.Logger
	every logevery.Second
}

func (h *otelErrors) Handle(err error) {
	if h.every.Allow() {
		h.log.Warn("tracing: export failed; spans are being dropped", "error", err)
	}
}

// redisLogger adapts go-redis's logger to slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
