package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"go.uber.org/goleak"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/internal/offstack"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	// Workers kept for offstack.Run wait between calls: not a leak.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(offstack.IdleWorker))
}

// baseConfig serves mock-gpt on a mock without delays; extra is appended
// to the providers section, models to the models section.
const baseConfig = `
auth:
  enabled: false
retry:
  max_time: 1s
  backoff: 1ms
server:
  heartbeat_interval: 0s
  shutdown_timeout: 5s
  max_body_bytes: 4096
providers:
  mock:
    type: mock
    mock:
      directives: true
      tokens: 5
%s
models:
  mock-gpt:
    routes:
      - provider: mock
        model: mock-1
%s
`

// openAIUpstream returns config snippets adding provider "up" (an openai
// provider pointed at url, with the given key) and model "up-model".
func openAIUpstream(url, key string) (providers, models string) {
	return fmt.Sprintf(`  up:
    type: openai
    base_url: %s/v1
    api_key: %s
`, url, key), `  up-model:
    routes:
      - provider: up
        model: gpt-4o-mini
`
}

// syncBuffer is a log sink safe for concurrent writes, which tests can
// wait on.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

// waitFor blocks until the log holds sub, failing after 10 s.
func (s *syncBuffer) waitFor(t *testing.T, sub string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		if strings.Contains(s.b.String(), sub) {
			s.mu.Unlock()
			return
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("log never showed %q:\n%s", sub, s.String())
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	srv  *Server
	http *httptest.Server
	logs *syncBuffer
	once sync.Once
}

// stop closes the server now (as at exit: the ledger writes what it
// holds) rather than when the test ends.
func (h *harness) stop() {
	h.once.Do(func() { h.http.Close(); h.srv.Close() })
}

// newHarness builds a gateway from YAML (through the real config loader)
// and serves it on a loopback httptest server.
func newHarness(t *testing.T, yaml string, edit ...func(*config.Config)) *harness {
	t.Helper()
	return newHarnessWith(t, yaml, nil, edit...)
}

// newHarnessWith is newHarness with options for New.
func newHarnessWith(t *testing.T, yaml string, opts []Option, edit ...func(*config.Config)) *harness {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	for _, e := range edit {
		e(cfg)
	}
	logs := &syncBuffer{}
	srv, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{srv: srv, http: httptest.NewServer(srv.Handler()), logs: logs}
	t.Cleanup(h.stop)
	return h
}

func newConfig(extraProviders, extraModels string) string {
	return fmt.Sprintf(baseConfig, extraProviders, extraModels)
}

// post sends a JSON body and returns the response; the caller closes it.
func (h *harness) post(t *testing.T, ctx context.Context, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Client().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// sseEvent is one frame read off the wire: an event or a comment.
type sseEvent struct {
	ID, Event, Data string
	Comment         string
	Retry           string
}

// sseReader parses a response body incrementally, frame by frame.
type sseReader struct{ r *bufio.Reader }

func newSSEReader(r io.Reader) *sseReader { return &sseReader{r: bufio.NewReader(r)} }

// next returns the next frame, or io.EOF when the body ended cleanly
// between frames.
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	started := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && !started && line == "" {
				return ev, io.EOF
			}
			return ev, fmt.Errorf("read frame: %w (partial %q)", err, line)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if started {
				return ev, nil
			}
			continue
		}
		started = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			ev.Comment = value
		case "id":
			ev.ID = value
		case "retry":
			ev.Retry = value
		case "event":
			ev.Event = value
		case "data":
			if ev.Data != "" {
				ev.Data += "\n"
			}
			ev.Data += value
		}
	}
}

// readAll reads frames until the body ends.
func (s *sseReader) readAll(t *testing.T) []sseEvent {
	t.Helper()
	var evs []sseEvent
	for {
		ev, err := s.next()
		if errors.Is(err, io.EOF) {
			return evs
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev)
	}
}

// nativeEvent is the data of a /v1/stream event.
type nativeEvent struct {
	Type           string `json:"type"`
	ID             string `json:"id"`
	Model          string `json:"model"`
	Provider       string `json:"provider"`
	Content        string `json:"content"`
	FinishReason   string `json:"finish_reason"`
	UsageEstimated bool   `json:"usage_estimated"`
	Usage          *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	TTFTms     *float64 `json:"ttft_ms"`
	DurationMs *float64 `json:"duration_ms"`
	Error      *struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeEvent(t *testing.T, ev sseEvent) nativeEvent {
	t.Helper()
	var ne nativeEvent
	if err := json.Unmarshal([]byte(ev.Data), &ne); err != nil {
		t.Fatalf("event data %q is not JSON: %v", ev.Data, err)
	}
	return ne
}

// streamNative posts to /v1/stream and returns every event decoded.
func (h *harness) streamNative(t *testing.T, body string) (*http.Response, []sseEvent, []nativeEvent) {
	t.Helper()
	resp := h.post(t, context.Background(), "/v1/stream", body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	raw := newSSEReader(resp.Body).readAll(t)
	var evs []nativeEvent
	for _, ev := range raw {
		if ev.Comment == "" {
			evs = append(evs, decodeEvent(t, ev))
		}
	}
	return resp, raw, evs
}

// errorBody is OpenAI's error shape.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func readError(t *testing.T, resp *http.Response) errorBody {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var eb errorBody
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Message == "" || eb.Error.Type == "" || eb.Error.Code == "" {
		t.Fatalf("body %q is not an OpenAI-shaped error (%v)", b, err)
	}
	return eb
}

// rawUpstream serves fn on a loopback server, for upstreams that must
// misbehave at the byte level.
func rawUpstream(t *testing.T, fn http.HandlerFunc) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(fn)
	t.Cleanup(ts.Close)
	return ts
}

// writeSSE writes frames to w, flushing after each.
func writeSSE(w http.ResponseWriter, frames ...string) {
	for _, f := range frames {
		_, _ = io.WriteString(w, f)
		w.(http.Flusher).Flush()
	}
}

func decodeBody(r *http.Request, v any) error {
	return json.NewDecoder(r.Body).Decode(v)
}

// httpClientNoKeepAlive does not pool connections, for servers a test
// kills.
var httpClientNoKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func newStreamRequest(ctx context.Context, base, key, body string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/stream", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	return req, nil
}

// recorded keeps the JSON bodies of the requests an upstream received.
type recorded struct {
	mu     sync.Mutex
	bodies []map[string]any
}

// last is the body of the latest request.
func (r *recorded) last() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bodies) == 0 {
		return nil
	}
	return r.bodies[len(r.bodies)-1]
}

// first is the body of the first request.
func (r *recorded) first() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bodies) == 0 {
		return nil
	}
	return r.bodies[0]
}

// recordingUpstream answers every request with frames (as SSE) and
// records its body; it counts calls too.
func recordingUpstream(t *testing.T, frames ...string) (*recorded, *atomic.Int32, string) {
	t.Helper()
	rec := &recorded{}
	calls, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		_ = decodeBody(r, &b)
		rec.mu.Lock()
		rec.bodies = append(rec.bodies, b)
		rec.mu.Unlock()
		sseOK(w, frames...)
	})
	return rec, calls, url
}

// anthropicText is a short Anthropic stream answering text.
func anthropicText(text string) []string {
	return []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":" + strconv.Quote(text) + "}}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n",
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	}
}
