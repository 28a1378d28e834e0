package gateway

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
)

func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("reload.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (h *harness) models(t *testing.T) string {
	t.Helper()
	return drainClose(h.do(t, context.Background(), http.MethodGet, "/v1/models", "", ""))
}

// TestReload: a new config serves new requests (models, keys, limits); a
// broken one is refused with every problem logged, and the running one
// stays.
func TestReload(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	if !strings.Contains(h.models(t), `"mock-gpt"`) {
		t.Fatal("mock-gpt not served")
	}
	next := newConfig("", `  added:
    routes: [{provider: mock}]
`)
	if err := h.srv.Reload(mustParse(t, next)); err != nil {
		t.Fatal(err)
	}
	if m := h.models(t); !strings.Contains(m, `"added"`) {
		t.Errorf("after reload: %s", m)
	}
	_, _, evs := h.streamNative(t, `{"model":"added","prompt":"hi [mock tokens=2]"}`)
	if evs[len(evs)-1].Type != "done" {
		t.Errorf("new model's stream ended %+v", evs[len(evs)-1])
	}
	h.logs.waitFor(t, `"msg":"config reloaded"`)

	// Keys and limits: auth turns on, with one key and a burst of 1.
	if err := h.srv.Reload(mustParse(t, keysConfig("      requests_per_minute: 60\n      burst: 1"))); err != nil {
		t.Fatal(err)
	}
	if resp := h.do(t, context.Background(), http.MethodPost, "/v1/stream", "", streamBody); drainClose(resp) == "" || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a key after auth was turned on: %d", resp.StatusCode)
	}
	for i, want := range []int{200, 429} {
		if resp := h.do(t, context.Background(), http.MethodPost, "/v1/stream", frontendKey, streamBody); drainClose(resp) == "" || resp.StatusCode != want {
			t.Errorf("request %d with the new key: %d, want %d", i, resp.StatusCode, want)
		}
	}

	// A broken file: every problem is logged, nothing changes.
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("providers:\n  m:\n    type: nope\nmodels:\n  a:\n    routes: [{provider: x}]\n"), 0o600)
	err := h.srv.ReloadWith(func() (*config.Config, error) { return config.Load(bad) })
	if err == nil {
		t.Fatal("a broken config was accepted")
	}
	for _, want := range []string{`providers.m.type: \"nope\"`, `models.a.routes[0].provider: \"x\"`, "the running configuration stays"} {
		h.logs.waitFor(t, want)
	}
	if resp := h.do(t, context.Background(), http.MethodPost, "/v1/stream", batchKey, streamBody); drainClose(resp) == "" || resp.StatusCode != http.StatusOK {
		t.Errorf("the old config stopped serving: %d", resp.StatusCode)
	}
	if s, f := h.metric(t, "gateway_config_reloads_total", "result", "success"), h.metric(t, "gateway_config_reloads_total", "result", "failure"); s != 2 || f != 1 {
		t.Errorf("reloads: %v ok, %v failed", s, f)
	}
}

// TestStreamSurvivesReload: a stream in flight finishes on the config it
// started with, even one whose provider and model the reload removed.
func TestStreamSurvivesReload(t *testing.T) {
	for _, tc := range []struct{ path, body, end, endpoint string }{
		{"/v1/chat/completions", `{"model":"up-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`, "[DONE]", "chat"},
		{"/v1/stream", `{"model":"up-model","prompt":"hi"}`, `"type":"done"`, "native"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			g := newGatedUpstream(t)
			h := newHarness(t, resumeConfig(g, ""))
			resp := h.post(t, context.Background(), tc.path, tc.body)
			defer resp.Body.Close()
			<-g.started
			if n := h.metric(t, "gateway_streams_in_flight", "endpoint", tc.endpoint); n != 1 {
				t.Errorf("streams in flight = %v, want 1", n)
			}
			if err := h.srv.Reload(mustParse(t, newConfig("", ""))); err != nil {
				t.Fatal(err)
			}
			if m := h.models(t); strings.Contains(m, "up-model") {
				t.Fatalf("up-model still listed: %s", m)
			}
			g.send("still", " here")
			g.finish()
			if body := drainClose(resp); !strings.Contains(body, "still") || !strings.Contains(body, " here") || !strings.Contains(body, tc.end) {
				t.Errorf("stream across the reload: %s", body)
			}
			after := h.post(t, context.Background(), tc.path, tc.body)
			if after.StatusCode != http.StatusNotFound {
				t.Errorf("new request for the removed model: %d", after.StatusCode)
			}
			drainClose(after)
		})
	}
}

// TestWatchConfig: writing the file reloads it.
func TestWatchConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(newConfig("", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, newConfig("", ""))
	defer h.srv.WatchConfig(path, 5*time.Millisecond, func() (*config.Config, error) { return config.Load(path) })()
	if err := os.WriteFile(path, []byte(newConfig("", "  watched:\n    routes: [{provider: mock}]\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	h.logs.waitFor(t, `"msg":"config reloaded"`)
	if m := h.models(t); !strings.Contains(m, `"watched"`) {
		t.Errorf("after the file changed: %s", m)
	}
}
