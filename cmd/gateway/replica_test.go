package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/gateway"
	"github.com/streamgate/gateway/internal/redistest"
)

// childConfigEnv makes the test binary run as a gateway (see TestMain), so
// that a test can kill a gateway process outright.
const childConfigEnv = "GATEWAY_TEST_CHILD_CONFIG"

// childArgsEnv holds more flags for the child, space-separated.
const childArgsEnv = "GATEWAY_TEST_CHILD_ARGS"

// runChild serves the config named in the environment until a signal
// ends it.
func runChild(path string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	args := append([]string{"-config", path}, strings.Fields(os.Getenv(childArgsEnv))...)
	if err := run(ctx, args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// child is a gateway running in another process (this test binary, run
// by TestMain as the gateway), so that a test can signal or kill it.
type child struct {
	cmd    *exec.Cmd
	lines  chan string // its log, line by line
	exited chan struct{}
}

// startChild runs a gateway on the config at path and waits until it
// listens.
func startChild(t *testing.T, path string, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$"), lines: make(chan string, 1024), exited: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), childConfigEnv+"="+path, childArgsEnv+"="+strings.Join(args, " "))
	stderr, _ := c.cmd.StderrPipe()
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default: // nobody is waiting for that much
			}
		}
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.exited })
	c.waitLog(t, "gateway listening")
	return c
}

// waitLog reads the child's log until a line holds sub.
func (c *child) waitLog(t *testing.T, sub string) {
	t.Helper()
	var seen strings.Builder
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-c.lines:
			if strings.Contains(l, sub) {
				return
			}
			seen.WriteString(l + "\n")
		case <-c.exited:
			t.Fatalf("the gateway exited before logging %q:\n%s", sub, seen.String())
		case <-timeout:
			t.Fatalf("the gateway never logged %q:\n%s", sub, seen.String())
		}
	}
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
responses:
  backend: redis
`, listen, redisAddr)
}

// replicas starts gateway A in another process (this test binary, so
// that the test can kill it) and gateway B in this one, sharing a Redis;
// it returns A's address, A, and B's URL.
func replicas(t *testing.T) (string, *child, string) {
	t.Helper()
	rds := redistest.Start(t)
	addrA := freeAddr(t)
	path := filepath.Join(t.TempDir(), "a.yaml")
	if err := os.WriteFile(path, []byte(replicaConfig(addrA, rds.Addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startChild(t, path)
	cfg, err := config.Parse("b.yaml", []byte(replicaConfig("127.0.0.1:0", rds.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := gateway.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	bs := httptest.NewServer(b.Handler())
	t.Cleanup(func() { bs.Close(); b.Close() })
	return addrA, a, bs.URL
}

// TestProducerLostWhenReplicaDies: a stream produced by gateway process A
// is followed through gateway B; A is killed (SIGKILL: no goodbye) and B's
// reader gets a producer_lost error event within the lease time, instead
// of waiting forever.
func TestProducerLostWhenReplicaDies(t *testing.T) {
	addrA, a, urlB := replicas(t)
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

	follow, err := client.Get(urlB + created.EventsURL)
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
	if err := a.cmd.Process.Kill(); err != nil {
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

// TestResponsesProducerLostWhenReplicaDies: a background response
// generated by gateway process A is streamed through gateway B; A is
// killed and B's reader gets response.failed with producer_lost, as the
// one terminal event, instead of a hang.
func TestResponsesProducerLostWhenReplicaDies(t *testing.T) {
	addrA, a, urlB := replicas(t)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post("http://"+addrA+"/v1/responses", "application/json", strings.NewReader(`{"model":"slow-model","input":"hi","background":true}`))
	if err != nil {
		t.Fatal(err)
	}
	var queued struct{ ID, Status string }
	_ = json.NewDecoder(resp.Body).Decode(&queued)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || queued.Status != "queued" {
		t.Fatalf("create on A: %d %+v", resp.StatusCode, queued)
	}
	follow, err := client.Get(urlB + "/v1/responses/" + queued.ID + "?stream=true")
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Body.Close()
	if follow.StatusCode != http.StatusOK {
		t.Fatalf("follow on B: %d", follow.StatusCode)
	}
	lines := bufio.NewScanner(follow.Body)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	deltas := 0
	for deltas < 3 && lines.Scan() {
		if lines.Text() == "event: response.output_text.delta" {
			deltas++
		}
	}
	if deltas < 3 {
		t.Fatalf("only %d deltas reached B before A died (%v)", deltas, lines.Err())
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var terminal []string
	for lines.Scan() {
		l := lines.Text()
		if len(terminal) > 0 {
			terminal = append(terminal, l)
			break
		}
		switch l {
		case "event: response.completed", "event: response.incomplete", "event: response.failed":
			terminal = append(terminal, l)
		}
	}
	if len(terminal) != 2 || terminal[0] != "event: response.failed" || !strings.Contains(terminal[1], `"code":"producer_lost"`) {
		t.Fatalf("after A died, B's reader got %q (%v)", terminal, lines.Err())
	}
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "event: ") {
			t.Errorf("an event after the terminal one: %s", lines.Text())
		}
	}
}
