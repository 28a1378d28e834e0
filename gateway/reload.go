package gateway

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/providers"
)

// Reload makes cfg (validated) the configuration of every new request:
// providers, models, keys, limits, retries, routing, CORS, timeouts of
// streams. Requests and streams in flight finish on the configuration they
// started with. On error the running configuration stays.
//
// A few settings belong to the process and change only with a restart:
// the listener and HTTP server settings, logging, the rate limiter's and
// streams' storage (backend, Redis, bounds, token secret). A reload that
// changes them says so in the log.
func (s *Server) Reload(cfg *config.Config) error {
	s.reloading.Lock()
	defer s.reloading.Unlock()
	prev := s.cur.Load()
	next, err := s.build(cfg, prev)
	if err != nil {
		s.metrics.Reloaded("failure")
		return fmt.Errorf("reload: %w", err)
	}
	s.cur.Store(next)
	// Providers that were replaced drop their idle connections; their
	// streams in flight keep theirs.
	for name, p := range prev.reg.Providers() {
		if next.reg.Providers()[name] != p {
			providers.CloseIdle(p)
		}
	}
	for _, section := range restartOnly(prev.cfg, cfg) {
		s.log.Warn("config reloaded, but this section's changes take effect only at restart", "section", section)
	}
	s.metrics.Reloaded("success")
	s.log.Info("config reloaded", "models", strings.Join(next.reg.Models(), ","), "keys", len(cfg.Keys))
	return nil
}

// ReloadWith reloads the configuration load returns. A config that does
// not load is reported, problem by problem, and the running one stays.
func (s *Server) ReloadWith(load func() (*config.Config, error)) error {
	cfg, err := load()
	if err == nil {
		err = s.Reload(cfg)
	} else {
		s.metrics.Reloaded("failure")
	}
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				s.log.Error("config reload: problem", "file", ce.File, "problem", p.String())
			}
		}
		s.log.Error("config reload failed: the running configuration stays", "error", err.Error())
	}
	return err
}

// WatchConfig reloads with load whenever the file at path changes from
// what it holds now, checking its contents every interval, until stop is
// called (which waits for the watcher to end). Contents, not times: an
// editor's rewrite or a Kubernetes ConfigMap's symlink swap both show.
func (s *Server) WatchConfig(path string, interval time.Duration, load func() (*config.Config, error)) (stop func()) {
	last, _ := fileSum(path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.watch(ctx, path, last, interval, load)
	}()
	return func() { cancel(); <-done }
}

func (s *Server) watch(ctx context.Context, path string, last [sha256.Size]byte, interval time.Duration, load func() (*config.Config, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sum, err := fileSum(path)
		if err != nil || sum == last {
			continue // a file being replaced may be missing for a moment
		}
		last = sum
		s.log.Info("config file changed: reloading", "file", path)
		_ = s.ReloadWith(load)
	}
}

func fileSum(path string) ([sha256.Size]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// restartOnly names the sections whose changes from old to new a reload
// does not apply.
func restartOnly(old, new *config.Config) []string {
	var out []string
	o, n := old.Server, new.Server
	if o.Listen != n.Listen || o.H2C != n.H2C || o.PprofListen != n.PprofListen || o.ReadHeaderTimeout != n.ReadHeaderTimeout ||
		o.IdleTimeout != n.IdleTimeout || o.Log != n.Log || o.Metrics.Listen != n.Metrics.Listen || o.MaxPendingBodyBytes != n.MaxPendingBodyBytes ||
		o.GCHeapFloorBytes != n.GCHeapFloorBytes {
		out = append(out, "server (listen, h2c, pprof_listen, metrics.listen, max_pending_body_bytes, gc_heap_floor_bytes, read_header_timeout, idle_timeout, log)")
	}
	ro, rn := old.RateLimit, new.RateLimit
	ro.Defaults, rn.Defaults = config.Limits{}, config.Limits{}
	if !reflect.DeepEqual(ro, rn) {
		out = append(out, "rate_limit (all but defaults)")
	}
	to, tn := old.Tracing, new.Tracing
	to.CaptureContent, tn.CaptureContent = false, false
	if !reflect.DeepEqual(to, tn) {
		out = append(out, "tracing (all but capture_content)")
	}
	so, sn := old.Streams, new.Streams
	so.LastReader, sn.LastReader = "", ""
	so.LastReaderGrace, sn.LastReaderGrace = 0, 0
	if !reflect.DeepEqual(so, sn) {
		out = append(out, "streams (all but last_reader, last_reader_grace)")
	}
	return out
}
