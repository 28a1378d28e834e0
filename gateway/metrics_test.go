package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/internal/redistest"
)

// samples returns the samples of metric family name.
func (h *harness) samples(t *testing.T, name string) []*dto.Metric {
	t.Helper()
	mfs, err := h.srv.metrics.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// metric sums the samples of family name whose labels include the given
// name/value pairs: a counter's or gauge's value, a histogram's count.
func (h *harness) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	sum := 0.0
next:
	for _, m := range h.samples(t, name) {
		for i := 0; i+1 < len(labels); i += 2 {
			if !hasLabel(m, labels[i], labels[i+1]) {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// histogram returns the count and sum of histogram name's samples.
func (h *harness) histogram(t *testing.T, name string) (count uint64, sum float64) {
	t.Helper()
	for _, m := range h.samples(t, name) {
		count += m.GetHistogram().GetSampleCount()
		sum += m.GetHistogram().GetSampleSum()
	}
	return count, sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue() == value
		}
	}
	return false
}

// TestMetricsFollowStreams drives each scenario through real HTTP and
// checks the metric families it must move.
func TestMetricsFollowStreams(t *testing.T) {
	type want struct {
		name   string
		labels []string
		value  float64
	}
	for _, tc := range []struct {
		name  string
		path  string
		body  string
		wants []want
	}{
		{"native done", "/v1/stream", `{"model":"mock-gpt","prompt":"hi [mock tokens=3]"}`, []want{
			{"gateway_requests_total", []string{"route", "/v1/stream", "model", "mock-gpt", "provider", "mock", "status", "200"}, 1},
			{"gateway_time_to_first_token_seconds", []string{"model", "mock-gpt", "provider", "mock"}, 1},
			{"gateway_inter_token_gap_seconds", []string{"model", "mock-gpt"}, 2},
			{"gateway_stream_duration_seconds", []string{"endpoint", "native"}, 1},
			{"gateway_stream_endings_total", []string{"endpoint", "native", "reason", "done"}, 1},
			{"gateway_tokens_total", []string{"model", "mock-gpt", "kind", "completion"}, 3},
			{"gateway_streams_in_flight", nil, 0},
		}},
		{"chat done", "/v1/chat/completions", `{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hi [mock tokens=2]"}]}`, []want{
			{"gateway_stream_endings_total", []string{"endpoint", "chat", "reason", "done"}, 1},
			{"gateway_tokens_total", []string{"kind", "completion"}, 2},
		}},
		{"messages done", "/v1/messages", `{"model":"mock-gpt","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi [mock tokens=2]"}]}`, []want{
			{"gateway_requests_total", []string{"route", "/v1/messages", "model", "mock-gpt", "status", "200"}, 1},
			{"gateway_stream_endings_total", []string{"endpoint", "messages", "reason", "done"}, 1},
			{"gateway_tokens_total", []string{"kind", "completion"}, 2},
		}},
		{"responses done", "/v1/responses", `{"model":"mock-gpt","stream":true,"input":"hi [mock tokens=2]"}`, []want{
			{"gateway_requests_total", []string{"route", "/v1/responses", "model", "mock-gpt", "status", "200"}, 1},
			{"gateway_stream_endings_total", []string{"endpoint", "responses", "reason", "done"}, 1},
		}},
		{"upstream error mid-stream", "/v1/stream", `{"model":"mock-gpt","prompt":"hi [mock fail_after=1]"}`, []want{
			{"gateway_stream_endings_total", []string{"reason", "upstream_error"}, 1},
			{"gateway_upstream_errors_total", []string{"provider", "mock"}, 1},
		}},
		{"refused before the stream", "/v1/stream", `{"model":"mock-gpt","prompt":"hi [mock fail_status=400]"}`, []want{
			{"gateway_requests_total", []string{"route", "/v1/stream", "status", "400"}, 1},
			{"gateway_upstream_errors_total", []string{"provider", "mock", "code", "http_400"}, 1},
			{"gateway_stream_endings_total", nil, 0},
		}},
		{"idle timeout", "/v1/stream", `{"model":"slow","prompt":"hi [mock stall_after=1]"}`, []want{
			{"gateway_stream_endings_total", []string{"reason", "timeout"}, 1},
			{"gateway_upstream_errors_total", []string{"code", "upstream_idle_timeout"}, 1},
		}},
		{"unknown route", "/v1/nope", `{}`, []want{
			{"gateway_requests_total", []string{"route", "unmatched", "status", "404"}, 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, newConfig(`  stalls:
    type: mock
    mock: {directives: true}
    idle_timeout: 50ms
`, `  slow:
    routes: [{provider: stalls}]
`))
			resp := h.post(t, context.Background(), tc.path, tc.body)
			drainClose(resp)
			if tc.path == "/v1/stream" && resp.StatusCode == http.StatusOK {
				h.logs.waitFor(t, `"msg":"stream finished"`)
			}
			for _, w := range tc.wants {
				if got := h.metric(t, w.name, w.labels...); got != w.value {
					t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
				}
			}
		})
	}
}

func TestMetricsLimitsAndKeys(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 60\n      burst: 1"))
	for i := range 2 {
		resp := h.do(t, context.Background(), http.MethodPost, "/v1/stream", frontendKey, streamBody)
		drainClose(resp)
		if i == 0 {
			h.logs.waitFor(t, `"msg":"stream finished"`)
		}
	}
	if got := h.metric(t, "gateway_rate_limit_rejections_total", "limit", "requests"); got != 1 {
		t.Errorf("requests rejections = %v", got)
	}
	if got := h.metric(t, "gateway_tokens_total", "key", "frontend", "kind", "completion"); got != 3 {
		t.Errorf("completion tokens of key frontend = %v", got)
	}
	body := drainClose(h.do(t, context.Background(), http.MethodGet, "/metrics", "", ""))
	for _, secret := range []string{frontendKey, batchKey} {
		if strings.Contains(body, secret) {
			t.Error("a key appears in /metrics")
		}
	}
}

// TestMetricsRetriesFallbacksCooldown: a first route that answers 503
// is retried, then fallen back from, and put on cooldown.
func TestMetricsRetriesFallbacksCooldown(t *testing.T) {
	_, bad := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"message":"busy","type":"server_error"}}`, http.StatusServiceUnavailable)
	})
	_, good := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		sseOK(w, roleChunk, helloChunk, stopChunk)
	})
	h := newHarness(t, routesConfig(bad, good, ""), func(c *config.Config) {
		c.Health.FailureThreshold = 2
	})
	resp := h.post(t, context.Background(), "/v1/stream", `{"model":"resilient","prompt":"hi"}`)
	if body := drainClose(resp); !strings.Contains(body, `"type":"done"`) {
		t.Fatalf("stream: %s", body)
	}
	for _, w := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"gateway_upstream_retries_total", []string{"provider", "up1"}, 1},
		{"gateway_upstream_fallbacks_total", []string{"model", "resilient"}, 1},
		{"gateway_upstream_errors_total", []string{"provider", "up1", "code", "http_503"}, 2},
		{"gateway_deployment_cooldown", []string{"model", "resilient", "provider", "up1"}, 1},
		{"gateway_deployment_cooldown", []string{"model", "resilient", "provider", "up2"}, 0},
	} {
		if got := h.metric(t, w.name, w.labels...); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
}

func TestReadiness(t *testing.T) {
	ready := func(h *harness) (int, string) {
		resp := h.do(t, context.Background(), http.MethodGet, "/readyz", "", "")
		return resp.StatusCode, drainClose(resp)
	}
	t.Run("redis goes away and comes back", func(t *testing.T) {
		srv := redistest.Start(t)
		g := newGatedUpstream(t)
		h := newHarness(t, redisStreamsConfig(g, srv.Addr)+fmt.Sprintf("rate_limit:\n  backend: redis\n  redis: {addr: %s}\n", srv.Addr))
		if code, body := ready(h); code != http.StatusOK || !strings.Contains(body, `"rate_limit_redis":"ok"`) || !strings.Contains(body, `"streams_redis":"ok"`) {
			t.Fatalf("with Redis up: %d %s", code, body)
		}
		srv.Stop()
		if code, body := ready(h); code != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"not_ready"`) || !strings.Contains(body, "redis ping") {
			t.Errorf("with Redis down: %d %s", code, body)
		}
		if resp := h.do(t, context.Background(), http.MethodGet, "/healthz", "", ""); drainClose(resp) == "" || resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz with Redis down: %d", resp.StatusCode)
		}
		srv.Restart()
		if code, body := ready(h); code != http.StatusOK {
			t.Errorf("with Redis back: %d %s", code, body)
		}
	})
	t.Run("no usable provider", func(t *testing.T) {
		h := newHarness(t, `auth: {enabled: false}
providers:
  openai:
    type: openai
    api_key: ${GATEWAY_TEST_UNSET_KEY}
models:
  gpt:
    routes: [{provider: openai}]
`)
		if code, body := ready(h); code != http.StatusServiceUnavailable || !strings.Contains(body, "no provider is usable") {
			t.Errorf("%d %s", code, body)
		}
	})
}

// TestAccessLogLine: one line per request with everything an operator
// needs, and no secret.
func TestAccessLogLine(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 600"))
	resp := h.do(t, context.Background(), http.MethodPost, "/v1/stream", frontendKey, streamBody)
	drainClose(resp)
	h.logs.waitFor(t, `"msg":"request"`)
	var line map[string]any
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, field := range []string{"request_id", "key", "model", "provider", "status", "ttft", "prompt_tokens", "completion_tokens", "duration", "end"} {
		if _, ok := line[field]; !ok {
			t.Errorf("access log lacks %s: %v", field, line)
		}
	}
	if line["key"] != "frontend" || line["end"] != "done" || line["status"] != 200.0 || line["completion_tokens"] != 3.0 {
		t.Errorf("access log %v", line)
	}
	if strings.Contains(h.logs.String(), frontendKey) {
		t.Error("a key reached the logs")
	}
}
