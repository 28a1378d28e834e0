package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamgate/gateway/internal/offstack"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childConfigEnv); path != "" {
		os.Exit(runChild(path))
	}
	// Workers kept for offstack.Run wait between calls: not a leak.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(offstack.IdleWorker))
}

// freeAddr returns a loopback address with a port free a moment ago, for
// a gateway that listens by itself.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestCheckConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-config", "../../config.yaml", "-check-config"}, &out, &errOut); err != nil {
		t.Fatalf("shipped config: %v", err)
	}
	if !strings.Contains(out.String(), "ok (") {
		t.Errorf("output %q", out.String())
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("server:\n  listen: nowhere\n  heartbeat_interval: often\nauth: {enabled: false}\nproviders:\n  m:\n    type: mock\nmodels:\n  a:\n    routes: [{provider: x}]\n"), 0o600)
	err := run(context.Background(), []string{"-config", bad, "-check-config"}, &out, &errOut)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"3 problem(s)", `line 2: server.listen: "nowhere"`, `line 3: "often" is not a duration`, `line 10: models.a.routes[0].provider: "x"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	if err := run(context.Background(), []string{"-config", "/nonexistent.yaml"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if err := run(context.Background(), []string{"-bogus"}, &out, &errOut); err == nil {
		t.Error("unknown flag accepted")
	}
}

// TestServesShippedConfig runs the gateway as the README does, on the
// shipped config.yaml, streams from the mock, then shuts it down.
func TestServesShippedConfig(t *testing.T) {
	addr := freeAddr(t)

	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-config", "../../config.yaml", "-listen", addr}, io.Discard, &logs) }()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var resp *http.Response
	var err error
	for i := 0; ; i++ { // the listener comes up asynchronously
		resp, err = client.Post("http://"+addr+"/v1/stream", "application/json", strings.NewReader(`{"model":"mock-gpt","prompt":"hi [mock tokens=3 delay=1ms first_delay=0s]"}`))
		if err == nil || i == 200 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("gateway exited: %v\n%s", err, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"type":"connected"`) || !strings.Contains(string(body), `"type":"done"`) || strings.Count(string(body), `"type":"delta"`) != 3 {
		t.Errorf("stream: %d\n%s", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}
