package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/serverwait"
)

// redisServer is a redis-server started for the Redis-backed target:
// shared limits and mirrored stream logs, as several replicas run.
type redisServer struct {
	Addr   string
	cmd    *exec.Cmd
	done   chan struct{}
	client *redis.Client
}

// errNoRedis says the Redis-backed target cannot run here.
var errNoRedis = errors.New("redis-server is not installed (make test-deps installs it)")

// startRedis starts redis-server on a free loopback port, without
// persistence.
func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errNoRedis
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	s := &redisServer{Addr: addr, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	s.client = redis.NewClient(&redis.Options{Addr: addr})
	if err := serverwait.Up("redis-server", s.done, 10*time.Second, 20*time.Millisecond, func(ctx context.Context) error { return s.client.Ping(ctx).Err() }); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *redisServer) pid() int { return s.cmd.Process.Pid }

// Commands is how many commands the server has run (INFO commandstats,
// every command summed; the INFO calls themselves included, one each).
func (s *redisServer) Commands(ctx context.Context) (int64, error) {
	info, err := s.client.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		// cmdstat_get:calls=21,usec=175,usec_per_call=8.33,...
		_, rest, ok := strings.Cut(line, ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("commandstats %q: %w", line, err)
		}
		total += v
	}
	return total, nil
}

// Stop kills the server and waits for it.
func (s *redisServer) Stop() {
	if s.client != nil {
		s.client.Close()
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// redisConfig keeps rate limits and stream logs in the Redis at addr.
func redisConfig(addr string) string {
	return fmt.Sprintf(`rate_limit:
  backend: redis
  redis:
    addr: %s
streams:
  backend: redis
  token_secret: bench-stream-token-secret-0123456789
`, addr)
}
