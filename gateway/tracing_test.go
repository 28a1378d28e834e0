package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/streamgate/gateway/internal/otlptest"
)

// Secrets and text that must never reach a span.
const (
	tracedKey      = "sk-gw-traced-0123456789abcdef"
	tracedUpKey    = "sk-up-traced-0123456789abcdef"
	collectorToken = "collector-token-0123456789"
	secretPrompt   = "tell-no-one-7f3a9c"
)

// spanEnds is a span processor that tells a test each span's name as
// it ends: a test waits for the request's span instead of sleeping.
type spanEnds chan string

func (spanEnds) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (p spanEnds) OnEnd(s sdktrace.ReadOnlySpan) {
	select {
	case p <- s.Name():
	default: // a test that stopped listening must not block the server
	}
}
func (spanEnds) Shutdown(context.Context) error   { return nil }
func (spanEnds) ForceFlush(context.Context) error { return nil }

// waitSpan waits until a span named name has ended.
func (p spanEnds) waitSpan(t *testing.T, name string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-p:
			if got == name {
				return
			}
		case <-timeout:
			t.Fatalf("span %q never ended", name)
		}
	}
}

// tracedUpstream fails its first two calls with 503 and streams an
// answer with usage on the third, recording each call's traceparent.
type tracedUpstream struct {
	mu      sync.Mutex
	parents []string
	url     string
}

func newTracedUpstream(t *testing.T) *tracedUpstream {
	u := &tracedUpstream{}
	_, u.url = countingUpstream(t, func(n int32, w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.parents = append(u.parents, r.Header.Get("traceparent"))
		u.mu.Unlock()
		if n <= 2 {
			http.Error(w, `{"error":{"message":"overloaded","type":"server_error"}}`, http.StatusServiceUnavailable)
			return
		}
		sseOK(w, roleChunk, helloChunk,
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m-b","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n",
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m-b","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}`+"\n\n",
			"data: [DONE]\n\n")
	})
	return u
}

func (u *tracedUpstream) traceparents() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.parents)
}

// tracedConfig serves model "traced" from provider a (model m-a), then
// b (m-b), both at upstream url, retrying each route once, with traces
// exported over protocol to endpoint.
func tracedConfig(url, protocol, endpoint, tracing string) string {
	return fmt.Sprintf(`
auth:
  enabled: true
keys:
  traced:
    key: %s
retry:
  attempts_per_route: 2
  max_attempts: 4
  max_time: 10s
  backoff: 1ms
server:
  heartbeat_interval: 0s
  shutdown_timeout: 5s
tracing:
  enabled: true
  protocol: %s
  endpoint: %s
  headers:
    authorization: Bearer %s
%s
providers:
  a:
    type: openai
    base_url: %s/v1
    api_key: %s
  b:
    type: openai
    base_url: %s/v1
    api_key: %s
models:
  traced:
    routes:
      - provider: a
        model: m-a
      - provider: b
        model: m-b
`, tracedKey, protocol, endpoint, collectorToken, tracing, url, tracedUpKey, url, tracedUpKey)
}

// tracedEndpoints are the endpoints a streamed request is traced on,
// each asking model "traced" for a stream with secretPrompt in it.
var tracedEndpoints = []struct{ name, path, body string }{
	{"chat", "/v1/chat/completions", `{"model":"traced","stream":true,"messages":[{"role":"user","content":"` + secretPrompt + `"}]}`},
	{"messages", "/v1/messages", `{"model":"traced","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"` + secretPrompt + `"}]}`},
	{"responses", "/v1/responses", `{"model":"traced","stream":true,"input":"` + secretPrompt + `"}`},
	{"native", "/v1/stream", `{"model":"traced","prompt":"` + secretPrompt + `"}`},
}

// Incoming trace context of the caller.
const (
	callerTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerParent = "00f067aa0ba902b7"
)

// postTraced sends body to path with the caller's traceparent and the
// traced key, and reads the whole stream, which must be a 200.
func postTraced(t *testing.T, h *harness, path, body, traceparent string) string {
	t.Helper()
	resp, b := sendTraced(t, h, path, body, traceparent)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d\n%s", path, resp.StatusCode, b)
	}
	return b
}

// tracedRequest sends body to path with the traced key and reads the
// whole answer.
func tracedRequest(t *testing.T, h *harness, path, body string) *http.Response {
	t.Helper()
	resp, _ := sendTraced(t, h, path, body, "")
	return resp
}

func sendTraced(t *testing.T, h *harness, path, body, traceparent string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tracedKey)
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	resp, err := h.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp, string(b)
}

// TestTraceSpanTree checks, on every endpoint and over both OTLP
// protocols, the span tree an in-process collector receives for a
// streamed request whose first route fails twice (one retry, then a
// fallback): the server span continues the caller's trace; admission,
// three attempts and the relay are its children; each attempt's
// traceparent reached the upstream; no key, token or prompt text is in
// any attribute.
func TestTraceSpanTree(t *testing.T) {
	type run struct{ name, protocol, path, body string }
	var runs []run
	for _, ep := range tracedEndpoints {
		runs = append(runs, run{ep.name + "/http", "http/protobuf", ep.path, ep.body})
	}
	runs = append(runs, run{"chat/grpc", "grpc", tracedEndpoints[0].path, tracedEndpoints[0].body})
	for _, tc := range runs {
		t.Run(tc.name, func(t *testing.T) {
			recv := otlptest.NewHTTP(t)
			if tc.protocol == "grpc" {
				recv = otlptest.NewGRPC(t)
			}
			up := newTracedUpstream(t)
			ends := make(spanEnds, 64)
			h := newHarnessWith(t, tracedConfig(up.url, tc.protocol, recv.URL, ""), []Option{WithTraceOptions(sdktrace.WithSpanProcessor(ends))})
			out := postTraced(t, h, tc.path, tc.body, "00-"+callerTrace+"-"+callerParent+"-01")
			if !strings.Contains(out, "hello") {
				t.Fatalf("stream lacks the answer:\n%s", out)
			}
			root := "POST " + tc.path
			ends.waitSpan(t, root)
			if err := h.srv.traces.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}
			spans := recv.Spans()
			checkTree(t, spans, root, up.traceparents())
			checkNoSecrets(t, spans)
			auth := "Authorization"
			if tc.protocol == "grpc" {
				auth = "authorization"
			}
			if got := recv.Header(auth); len(got) != 1 || got[0] != "Bearer "+collectorToken {
				t.Errorf("collector got %s %q", auth, got)
			}
		})
	}
}

// checkTree checks the spans of one request, named root.
func checkTree(t *testing.T, spans []otlptest.Span, root string, traceparents []string) {
	t.Helper()
	byName := map[string][]otlptest.Span{}
	for _, s := range spans {
		if s.TraceID() != callerTrace {
			t.Errorf("span %q in trace %s, not the caller's", s.Name, s.TraceID())
		}
		if s.Service != "streamgate" {
			t.Errorf("span %q of service %q", s.Name, s.Service)
		}
		byName[s.Name] = append(byName[s.Name], s)
	}
	if len(byName[root]) != 1 {
		t.Fatalf("want one %q span; got spans %v", root, names(spans))
	}
	r := byName[root][0]
	if r.ParentID() != callerParent || r.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span: parent %s kind %v", r.ParentID(), r.Kind)
	}
	want := map[string]int{root: 1, "admission": 1, "chat m-a": 2, "chat m-b": 1, "relay": 1}
	for name, n := range want {
		if len(byName[name]) != n {
			t.Errorf("%d spans %q, want %d; got %v", len(byName[name]), name, n, names(spans))
		}
	}
	if len(spans) != 6 {
		t.Errorf("%d spans, want 6: %v", len(spans), names(spans))
	}
	for _, s := range spans {
		if s.Name != root && s.ParentID() != r.SpanID() {
			t.Errorf("span %q is not a child of the server span", s.Name)
		}
	}
	for attr, v := range map[string]string{
		"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "traced",
		"gen_ai.response.model": "m-b", "gateway.provider": "b", "gateway.end": "done", "gateway.key_name": "traced",
	} {
		if got := r.Str(attr); got != v {
			t.Errorf("server span %s = %q, want %q", attr, got, v)
		}
	}
	for attr, v := range map[string]int64{
		"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 1, "gateway.attempts": 3, "gateway.fallbacks": 1,
		"http.response.status_code": 200,
	} {
		if got := r.Int(attr); got != v {
			t.Errorf("server span %s = %d, want %d", attr, got, v)
		}
	}
	if v, _ := r.Attr("gen_ai.response.finish_reasons"); len(v.GetArrayValue().GetValues()) != 1 {
		t.Errorf("finish reasons %v", v)
	}
	if v, _ := r.Attr("gateway.time_to_first_token_ms"); v.GetDoubleValue() <= 0 {
		t.Errorf("time to first token %v", v)
	}
	if got := r.Events(); !slices.Equal(got, []string{"retry", "fallback", "first_token"}) {
		t.Errorf("server span events %v, want retry, fallback, first_token", got)
	}
	if r.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("a complete stream's span is an error")
	}

	// The attempts, in order, and the traceparent each sent.
	attempts := append(slices.Clone(byName["chat m-a"]), byName["chat m-b"]...)
	slices.SortFunc(attempts, func(a, b otlptest.Span) int { return int(a.Int("gateway.attempt") - b.Int("gateway.attempt")) })
	if len(traceparents) != 3 || len(attempts) != 3 {
		t.Fatalf("upstream saw traceparents %q for %d attempt spans", traceparents, len(attempts))
	}
	for i, a := range attempts {
		if a.Int("gateway.attempt") != int64(i+1) || a.Kind != tracepb.Span_SPAN_KIND_CLIENT || a.Str("gen_ai.system") != "openai" {
			t.Errorf("attempt %d: %+v", i+1, a.Attributes)
		}
		if want := "00-" + callerTrace + "-" + a.SpanID() + "-01"; traceparents[i] != want {
			t.Errorf("upstream call %d carried traceparent %q, want %q", i+1, traceparents[i], want)
		}
		failed := i < 2
		if got := a.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR; got != failed {
			t.Errorf("attempt %d error status %v, want %v", i+1, got, failed)
		}
		if failed && a.Int("http.response.status_code") != 503 {
			t.Errorf("attempt %d status code %d", i+1, a.Int("http.response.status_code"))
		}
		if got := a.Events(); failed && len(got) != 0 || !failed && !slices.Equal(got, []string{"first_token"}) {
			t.Errorf("attempt %d events %v", i+1, got)
		}
	}
	if ad := byName["admission"]; len(ad) == 1 {
		if v, _ := ad[0].Attr("gateway.admitted"); !v.GetBoolValue() {
			t.Errorf("admission span: %+v", ad[0].Attributes)
		}
	}
}

func names(spans []otlptest.Span) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}

// checkNoSecrets fails if any attribute of any span or span event holds
// a key, the collector's token or the prompt.
func checkNoSecrets(t *testing.T, spans []otlptest.Span) {
	t.Helper()
	for _, s := range spans {
		kvs := slices.Clone(s.Attributes)
		for _, e := range s.Span.Events {
			kvs = append(kvs, e.Attributes...)
		}
		for _, kv := range kvs {
			v := anyString(kv.Value)
			for _, secret := range []string{tracedKey, tracedUpKey, collectorToken, secretPrompt} {
				if strings.Contains(v, secret) {
					t.Errorf("span %q attribute %s holds %q", s.Name, kv.Key, secret)
				}
			}
		}
	}
}

func anyString(v *commonpb.AnyValue) string {
	if a := v.GetArrayValue(); a != nil {
		var b strings.Builder
		for _, e := range a.Values {
			b.WriteString(anyString(e))
		}
		return b.String()
	}
	return v.GetStringValue()
}

// TestTraceSampling checks that sampling decides what is exported while
// the trace context reaches the upstream either way: a ratio of 0
// records no new trace (its unsampled traceparent still goes upstream),
// a caller's sampled trace is followed, and with tracing off nothing is
// added to the upstream's request.
func TestTraceSampling(t *testing.T) {
	for _, tc := range []struct {
		name, tracing, traceparent string
		spans                      int    // exported
		upstream                   string // the traceparent's shape upstream: "" none, else its flags
	}{
		{name: "ratio 0, new trace", tracing: "  sample_ratio: 0", spans: 0, upstream: "00"},
		{name: "ratio 0, caller sampled", tracing: "  sample_ratio: 0", traceparent: "00-" + callerTrace + "-" + callerParent + "-01", spans: 6, upstream: "01"},
		{name: "ratio 1, caller not sampled", tracing: "  sample_ratio: 1", traceparent: "00-" + callerTrace + "-" + callerParent + "-00", spans: 0, upstream: "00"},
		{name: "off", tracing: "  sample_ratio: 1", traceparent: "00-" + callerTrace + "-" + callerParent + "-01", spans: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recv := otlptest.NewHTTP(t)
			up := newTracedUpstream(t)
			cfg := tracedConfig(up.url, "http/protobuf", recv.URL, tc.tracing)
			if tc.spans < 0 {
				cfg = strings.Replace(cfg, "  enabled: true\n  protocol", "  enabled: false\n  protocol", 1)
			}
			h := newHarness(t, cfg)
			postTraced(t, h, tracedEndpoints[0].path, tracedEndpoints[0].body, tc.traceparent)
			// Closing the server waits for the handler and flushes the
			// exporter.
			h.stop()
			if n := len(recv.Spans()); n != max(tc.spans, 0) {
				t.Errorf("%d spans exported, want %d", n, max(tc.spans, 0))
			}
			for i, tp := range up.traceparents() {
				switch {
				case tc.upstream == "" && tp != "":
					t.Errorf("call %d carried traceparent %q with tracing off", i+1, tp)
				case tc.upstream != "" && (len(tp) != 55 || !strings.HasSuffix(tp, "-"+tc.upstream)):
					t.Errorf("call %d carried traceparent %q, want flags %s", i+1, tp, tc.upstream)
				case tc.traceparent != "" && tc.upstream != "" && !strings.Contains(tp, callerTrace):
					t.Errorf("call %d carried traceparent %q, not of the caller's trace", i+1, tp)
				}
			}
		})
	}
}

// TestTraceFailedRequest checks the spans of a request every attempt of
// which failed: four attempts, each an error with its status, and a
// server span that is an error with the gateway's error code.
func TestTraceFailedRequest(t *testing.T) {
	recv := otlptest.NewHTTP(t)
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":{"message":"overloaded","type":"server_error"}}`, http.StatusServiceUnavailable)
	})
	h := newHarness(t, tracedConfig(url, "http/protobuf", recv.URL, ""))
	resp := tracedRequest(t, h, "/v1/chat/completions", `{"model":"traced","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	h.stop()
	var attempts int
	var server *otlptest.Span
	for _, s := range recv.Spans() {
		switch {
		case strings.HasPrefix(s.Name, "chat "):
			attempts++
			if s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || s.Int("http.response.status_code") != 503 {
				t.Errorf("attempt %q: status %v, code %d", s.Name, s.Status, s.Int("http.response.status_code"))
			}
		case s.Name == "POST /v1/chat/completions":
			server = &s
		}
	}
	if attempts != 4 || server == nil {
		t.Fatalf("%d attempts, server span %v", attempts, server)
	}
	if server.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || server.Str("gateway.error_code") == "" || server.Int("http.response.status_code") != int64(resp.StatusCode) {
		t.Errorf("server span: %v %+v (answered %d)", server.Status, server.Attributes, resp.StatusCode)
	}
}

// TestTraceCaptureContent checks that prompts and a non-streamed answer
// reach the span only with capture_content, and without the configured
// secrets even then.
func TestTraceCaptureContent(t *testing.T) {
	for _, capture := range []bool{false, true} {
		t.Run(fmt.Sprint("capture=", capture), func(t *testing.T) {
			recv := otlptest.NewHTTP(t)
			up := newTracedUpstream(t)
			h := newHarness(t, tracedConfig(up.url, "http/protobuf", recv.URL, fmt.Sprintf("  capture_content: %v", capture)))
			resp := tracedRequest(t, h, "/v1/chat/completions", `{"model":"traced","messages":[{"role":"user","content":"`+secretPrompt+` `+tracedUpKey+`"}]}`)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			h.stop()
			var in, out string
			for _, s := range recv.Spans() {
				if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
					in, out = s.Str("gen_ai.input.messages"), s.Str("gen_ai.output.messages")
				}
			}
			if capture != strings.Contains(in, secretPrompt) || capture != strings.Contains(out, "hello") {
				t.Errorf("capture %v: input %q, output %q", capture, in, out)
			}
			if strings.Contains(in, tracedUpKey) || capture && !strings.Contains(in, "[REDACTED]") {
				t.Errorf("captured input not redacted: %q", in)
			}
		})
	}
}

// TestTraceSkipsProbes checks that probes and metrics, polled every few
// seconds, make no spans, while API requests (even refused ones) do.
func TestTraceSkipsProbes(t *testing.T) {
	recv := otlptest.NewHTTP(t)
	h := newHarness(t, tracedConfig("http://127.0.0.1:1", "http/protobuf", recv.URL, ""))
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := h.http.Client().Get(h.http.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp := h.post(t, context.Background(), "/v1/chat/completions", `{"model":"traced","messages":[]}`) // no key: 401
	resp.Body.Close()
	h.stop()
	if got := names(recv.Spans()); !slices.Equal(got, []string{"POST /v1/chat/completions"}) {
		t.Errorf("spans %v, want only the API request's", got)
	}
}

// TestTraceEnvironment checks that the standard variables configure
// what the file leaves out: OTEL_EXPORTER_OTLP_ENDPOINT and
// OTEL_SERVICE_NAME, and that OTEL_SDK_DISABLED=true turns tracing off.
func TestTraceEnvironment(t *testing.T) {
	for _, disabled := range []bool{false, true} {
		t.Run(fmt.Sprint("disabled=", disabled), func(t *testing.T) {
			recv := otlptest.NewHTTP(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
			t.Setenv("OTEL_SERVICE_NAME", "gateway-from-env")
			t.Setenv("OTEL_SDK_DISABLED", fmt.Sprint(disabled))
			up := newTracedUpstream(t)
			h := newHarness(t, strings.Replace(tracedConfig(up.url, "http/protobuf", "", ""), "  endpoint: \n", "", 1))
			postTraced(t, h, tracedEndpoints[0].path, tracedEndpoints[0].body, "")
			h.stop()
			spans := recv.Spans()
			if disabled != (len(spans) == 0) {
				t.Fatalf("OTEL_SDK_DISABLED=%v: %d spans", disabled, len(spans))
			}
			for _, s := range spans {
				if s.Service != "gateway-from-env" {
					t.Errorf("span %q of service %q", s.Name, s.Service)
				}
			}
		})
	}
}

// TestTraceStreamCutShort checks the spans of a stream whose upstream
// broke off after the first token: answered 200, yet the server, relay
// and attempt spans are errors, with the ending and its code.
func TestTraceStreamCutShort(t *testing.T) {
	recv := otlptest.NewHTTP(t)
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, _ *http.Request) {
		sseOK(w, roleChunk, helloChunk) // and the body ends: no finish, no [DONE]
	})
	h := newHarness(t, tracedConfig(url, "http/protobuf", recv.URL, ""))
	out := postTraced(t, h, tracedEndpoints[0].path, tracedEndpoints[0].body, "")
	if strings.Contains(out, "[DONE]") {
		t.Fatalf("a cut stream ended with [DONE]:\n%s", out)
	}
	h.stop()
	byName := map[string]otlptest.Span{}
	for _, s := range recv.Spans() {
		byName[s.Name] = s
	}
	server, relay, attempt := byName["POST /v1/chat/completions"], byName["relay"], byName["chat m-a"]
	if server.Span == nil || relay.Span == nil || attempt.Span == nil {
		t.Fatalf("spans %v", names(recv.Spans()))
	}
	for _, s := range []otlptest.Span{server, relay, attempt} {
		if s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("span %q is not an error: %v", s.Name, s.Status)
		}
	}
	if server.Str("gateway.end") != "upstream_error" || server.Str("gateway.error_code") == "" || server.Int("http.response.status_code") != 200 {
		t.Errorf("server span: %+v", server.Attributes)
	}
	if relay.Str("gateway.end") != "upstream_error" {
		t.Errorf("relay span: %+v", relay.Attributes)
	}
}
