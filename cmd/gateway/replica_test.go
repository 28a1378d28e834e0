package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/gateway"
	"github.com/streamgate/gateway/internal/redistest"
)

// childConfigEnv makes the test binary run as a gateway (see TestMain), so
// that a test can kill a gateway process outright.
const childConfigEnv = "GATEWAY_TEST_CHILD_CONFIG"

// runChild serves the config named in the environment until killed.
func runChild(path string) int {
	if err := run(context.Background(), []string{"-config", path}, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// replicaConfig serves a slow mock model, with streams in the Redis at
// redisAddr and a one-second producer lease.
func replicaConfig(listen, redisAddr string) string {
	return fmt.Sprintf(`server:
  listen: %s
  heartbeat_interval: 0s
auth:
  enabled: false
providers:
  slow:
    type: mock
    mock:
      tokens: 10000
      token_delay: 20ms
models:
  slow-model:
    routes: [{provider: slow}]
streams:
  backend: redis
  redis:
    addr: %s
  token_secret: replica-test-secret-0123456789
  lease_ttl: 1s
  last_reader: drain
`, listen, redisAddr)
}

// TestProducerLostWhenReplicaDies: a stream produced by gateway process A
// is followed through gateway B; A is killed (SIGKILL: no goodbye) and B's
// reader gets a producer_lost error event within the lease time, instead
// of waiting forever.
func TestProducerLostWhenReplicaDies(t *testing.T) {
	rds := redistest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addrA := ln.Addr().String()
	ln.Close()
	path := filepath.Join(t.TempDir(), "a.yaml")
	if err := os.WriteFile(path, []byte(replicaConfig(addrA, rds.Addr)), 0o600); err != nil {
		t.Fatal(err)
	}

	// Gateway A: this test binary, in another process.
	a := exec.Command(os.Args[0], "-test.run=^$")
	a.Env = append(os.Environ(), childConfigEnv+"="+path)
	stderr, _ := a.StderrPipe()
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = a.Wait(); close(exited) }()
	t.Cleanup(func() { _ = a.Process.Kill(); <-exited })
	listening, scanned := make(chan struct{}), make(chan struct{})
	var out strings.Builder // A's log until it listens
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "gateway listening") {
				close(listening)
				break
			}
			out.WriteString(sc.Text() + "\n")
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case <-listening:
	case <-exited:
		<-scanned
		t.Fatalf("gateway A exited before listening:\n%s", out.String())
	case <-time.After(30 * time.Second):
		t.Fatal("gateway A never listened")
	}

	// Gateway B: in this process, same Redis.
	cfg, err := config.Parse("b.yaml", []byte(replicaConfig("127.0.0.1:0", rds.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	bs := httptest.NewServer(b.Handler())
	defer func() { bs.Close(); b.Close() }()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post("http://"+addrA+"/v1/streams", "application/json", strings.NewReader(`{"model":"slow-model","prompt":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		EventsURL string `json:"events_url"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create on A: %d", resp.StatusCode)
	}

	follow, err := client.Get(bs.URL + created.EventsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Body.Close()
	if follow.StatusCode != http.StatusOK {
		t.Fatalf("follow on B: %d", follow.StatusCode)
	}
	lines := bufio.NewScanner(follow.Body)
	deltas := 0
	for deltas < 3 && lines.Scan() { // A's deltas, live through Redis
		if strings.Contains(lines.Text(), `"type":"delta"`) {
			deltas++
		}
	}
	if deltas < 3 {
		t.Fatalf("only %d deltas reached B before A died (%v)", deltas, lines.Err())
	}

	killed := time.Now()
	if err := a.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var terminal string
	for lines.Scan() {
		if l := lines.Text(); strings.Contains(l, `"type":"error"`) || strings.Contains(l, `"type":"done"`) {
			terminal = l
			break
		}
	}
	took := time.Since(killed)
	if !strings.Contains(terminal, `"code":"producer_lost"`) || !strings.HasPrefix(terminal, "data: ") {
		t.Fatalf("after A died, B's reader got %q (%v)", terminal, lines.Err())
	}
	t.Logf("producer_lost reached B %v after A was killed (lease 1s)", took.Round(time.Millisecond))
	// Within the lease, but for the scheduling slack of a loaded machine
	// (the race detector, parallel packages).
	if took > 2*time.Second {
		t.Errorf("producer_lost took %v", took)
	}
}
