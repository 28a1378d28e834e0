package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/internal/testclock"
	"github.com/streamgate/gateway/resumable"
)

// gatedUpstream is an OpenAI-wire upstream whose test decides when each
// token goes out, and learns when the gateway cancels the request.
type gatedUpstream struct {
	url   string
	steps chan string
	// started is closed when the request arrives, cancelled when its
	// context ends before the answer did.
	started, cancelled chan struct{}
	once               sync.Once
}

func newGatedUpstream(t *testing.T) *gatedUpstream {
	g := &gatedUpstream{steps: make(chan string), started: make(chan struct{}), cancelled: make(chan struct{})}
	up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		g.once.Do(func() { close(g.started) })
		sseOK(w, roleChunk)
		for {
			select {
			case tok, ok := <-g.steps:
				if !ok {
					writeSSE(w, stopChunk)
					return
				}
				b, _ := json.Marshal(tok)
				writeSSE(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":`+string(b)+`},"finish_reason":null}]}`+"\n\n")
			case <-r.Context().Done():
				close(g.cancelled)
				return
			}
		}
	})
	g.url = up.URL
	return g
}

// send hands tokens to the upstream, which writes each before taking the
// next.
func (g *gatedUpstream) send(tokens ...string) {
	for _, tok := range tokens {
		g.steps <- tok
	}
}

// finish ends the answer.
func (g *gatedUpstream) finish() { close(g.steps) }

// waitCancelled fails unless the gateway cancels the upstream request.
func (g *gatedUpstream) waitCancelled(t *testing.T) {
	t.Helper()
	select {
	case <-g.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was never cancelled")
	}
}

// resumeConfig serves model "up-model" from g, with extra appended as
// top-level YAML.
func resumeConfig(g *gatedUpstream, extra string) string {
	return newConfig(openAIUpstream(g.url, "sk-test")) + extra
}

// openEvents GETs an events URL with optional headers (name, value...).
func (h *harness) openEvents(t *testing.T, ctx context.Context, path string, hdr ...string) *http.Response {
	t.Helper()
	return h.do(t, ctx, http.MethodGet, path, "", "", hdr...)
}

// events reads n events (comments skipped) from r.
func events(t *testing.T, r *sseReader, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	for len(out) < n {
		ev, err := r.next()
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		if ev.Data != "" {
			out = append(out, ev)
		}
	}
	return out
}

// rest reads every remaining event.
func rest(t *testing.T, r *sseReader) []sseEvent {
	t.Helper()
	var out []sseEvent
	for _, ev := range r.readAll(t) {
		if ev.Data != "" {
			out = append(out, ev)
		}
	}
	return out
}

func render(evs []sseEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%s %s\n", ev.ID, ev.Data)
	}
	return b.String()
}

// connectedEvent decodes the resume URL out of a connected event.
func connectedEvent(t *testing.T, ev sseEvent) (id, resumeURL string) {
	t.Helper()
	var c struct {
		Type      string `json:"type"`
		StreamID  string `json:"stream_id"`
		ResumeURL string `json:"resume_url"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &c); err != nil || c.Type != "connected" || c.StreamID == "" || !strings.HasPrefix(c.ResumeURL, "/v1/streams/"+c.StreamID+"?token=") {
		t.Fatalf("connected event %q (%v)", ev.Data, err)
	}
	return c.StreamID, c.ResumeURL
}

// replay reads a finished stream whole from its events URL.
func (h *harness) replay(t *testing.T, path string) []sseEvent {
	t.Helper()
	resp := h.openEvents(t, context.Background(), path)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("replay: status %d: %s", resp.StatusCode, drainClose(resp))
	}
	return rest(t, newSSEReader(resp.Body))
}

// TestResumeAfterDrop drops the connection after k events and resumes
// with the id of the last one: what the client got in all equals a full
// replay, nothing lost or doubled, whether it came back while the stream
// was live or after it ended, and with the header or the query parameter.
func TestResumeAfterDrop(t *testing.T) {
	for _, tc := range []struct {
		name     string
		k        int
		query    bool
		whenLive bool
	}{
		{"header, after 2, while live", 2, false, true},
		{"header, after 4, after the end", 4, false, false},
		{"query, after 1, while live", 1, true, true},
		{"query, after 3, after the end", 3, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGatedUpstream(t)
			h := newHarness(t, resumeConfig(g, "streams:\n  last_reader: continue\n"))
			ctx, drop := context.WithCancel(context.Background())
			resp := h.post(t, ctx, "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
			sr := newSSEReader(resp.Body)
			g.send("one", " two", " three")
			got := events(t, sr, tc.k)
			_, resumeURL := connectedEvent(t, got[0])
			drop()
			resp.Body.Close()
			h.logs.waitFor(t, `"msg":"client left the stream"`)

			resume := func() *http.Response {
				last := got[len(got)-1].ID
				if tc.query {
					return h.openEvents(t, context.Background(), resumeURL+"&last_event_id="+last)
				}
				return h.openEvents(t, context.Background(), resumeURL, "Last-Event-ID", last)
			}
			var again *http.Response
			if tc.whenLive {
				again = resume()
				g.send(" four")
				g.finish()
			} else {
				g.send(" four")
				g.finish()
				h.logs.waitFor(t, `"msg":"stream finished"`)
				again = resume()
			}
			if again.StatusCode != http.StatusOK || again.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("resume: %d %s", again.StatusCode, drainClose(again))
			}
			ar := newSSEReader(again.Body)
			if first, err := ar.next(); err != nil || first.Retry != "1000" || first.Data != "" {
				t.Fatalf("resume began with %+v (%v), want the retry: field", first, err)
			}
			got = append(got, rest(t, ar)...)
			again.Body.Close()

			full := h.replay(t, resumeURL)
			if render(got) != render(full) {
				t.Errorf("dropped and resumed:\n%s\nfull replay:\n%s", render(got), render(full))
			}
			if last := decodeEvent(t, full[len(full)-1]); last.Type != "done" || len(full) != 6 {
				t.Errorf("replay has %d events ending %+v", len(full), last)
			}
			// After the terminal event nothing is replayed, and a 204
			// stops EventSource from reconnecting.
			end := h.openEvents(t, context.Background(), resumeURL, "Last-Event-ID", full[len(full)-1].ID)
			if end.StatusCode != http.StatusNoContent {
				t.Errorf("resume after the end: %d", end.StatusCode)
			}
			end.Body.Close()
		})
	}
}

// TestTwoReaders follows one stream started with POST /v1/streams from two
// connections at once: both see the same events.
func TestTwoReaders(t *testing.T) {
	g := newGatedUpstream(t)
	h := newHarness(t, resumeConfig(g, ""))
	resp := h.post(t, context.Background(), "/v1/streams", `{"model":"up-model","prompt":"hi"}`)
	body := drainClose(resp)
	var created struct {
		ID        string `json:"id"`
		Object    string `json:"object"`
		EventsURL string `json:"events_url"`
	}
	_ = json.Unmarshal([]byte(body), &created)
	if resp.StatusCode != http.StatusCreated || created.Object != "stream" || !resumable.ValidID(created.ID) || resp.Header.Get("Location") != created.EventsURL {
		t.Fatalf("POST /v1/streams: %d %s (Location %q)", resp.StatusCode, body, resp.Header.Get("Location"))
	}
	var readers []*sseReader
	for range 2 {
		r := h.openEvents(t, context.Background(), created.EventsURL)
		defer r.Body.Close()
		readers = append(readers, newSSEReader(r.Body))
	}
	g.send("a", "b", "c")
	g.finish()
	a, b := rest(t, readers[0]), rest(t, readers[1])
	if render(a) != render(b) || len(a) != 5 {
		t.Errorf("reader 1:\n%s\nreader 2:\n%s", render(a), render(b))
	}
}

// TestDeleteCancelsUpstream cancels a stream while a reader follows it.
func TestDeleteCancelsUpstream(t *testing.T) {
	g := newGatedUpstream(t)
	h := newHarness(t, resumeConfig(g, ""))
	resp := h.post(t, context.Background(), "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	defer resp.Body.Close()
	sr := newSSEReader(resp.Body)
	g.send("partial")
	evs := events(t, sr, 2)
	id, resumeURL := connectedEvent(t, evs[0])

	del := h.do(t, context.Background(), http.MethodDelete, resumeURL, "", "")
	if body := drainClose(del); del.StatusCode != http.StatusOK || !strings.Contains(body, `"cancelled":true`) {
		t.Fatalf("DELETE: %d %s", del.StatusCode, body)
	}
	g.waitCancelled(t)
	tail := rest(t, sr)
	if len(tail) != 1 {
		t.Fatalf("after DELETE the reader got %s", render(tail))
	}
	if e := decodeEvent(t, tail[0]); e.Type != "error" || e.Error.Code != "cancelled" {
		t.Errorf("terminal event %+v", e)
	}
	again := h.do(t, context.Background(), http.MethodDelete, "/v1/streams/"+id+"?"+strings.SplitN(resumeURL, "?", 2)[1], "", "")
	if body := drainClose(again); !strings.Contains(body, `"cancelled":false`) {
		t.Errorf("second DELETE: %s", body)
	}
	if v := h.metric(t, "gateway_streams_cancelled_total", "reason", "delete"); v != 1 {
		t.Errorf("cancelled metric %v", v)
	}
}

// TestLastReaderPolicies: what happens to the upstream when the only
// reader leaves mid-answer.
func TestLastReaderPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy string
		// comesBack: a reader returns within the grace period.
		comesBack bool
		cancelled bool
	}{
		{policy: "cancel", cancelled: true},
		{policy: "continue", comesBack: true},
		{policy: "continue", cancelled: true},
		{policy: "drain"},
	} {
		t.Run(fmt.Sprintf("%s comes back %v", tc.policy, tc.comesBack), func(t *testing.T) {
			g := newGatedUpstream(t)
			grace := "50ms"
			if tc.comesBack {
				grace = "1m"
			}
			h := newHarness(t, resumeConfig(g, fmt.Sprintf("streams:\n  last_reader: %s\n  last_reader_grace: %s\n", tc.policy, grace)))
			ctx, drop := context.WithCancel(context.Background())
			resp := h.post(t, ctx, "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
			sr := newSSEReader(resp.Body)
			g.send("before")
			evs := events(t, sr, 2)
			_, resumeURL := connectedEvent(t, evs[0])
			drop()
			resp.Body.Close()
			h.logs.waitFor(t, `"msg":"client left the stream"`)

			if tc.comesBack {
				r := h.openEvents(t, context.Background(), resumeURL, "Last-Event-ID", "2")
				defer r.Body.Close()
				g.send(" after")
				g.finish()
				tail := rest(t, newSSEReader(r.Body))
				if len(tail) != 2 || tail[0].ID != "3" || decodeEvent(t, tail[0]).Content != " after" || decodeEvent(t, tail[1]).Type != "done" {
					t.Errorf("came back to %s", render(tail))
				}
				return
			}
			if tc.cancelled {
				g.waitCancelled(t)
				full := h.replay(t, resumeURL)
				if e := decodeEvent(t, full[len(full)-1]); e.Type != "error" || e.Error.Code != "cancelled" || !strings.Contains(e.Error.Message, "last reader") {
					t.Errorf("terminal event %+v", e)
				}
				if v := h.metric(t, "gateway_streams_cancelled_total", "reason", "last_reader"); v != 1 {
					t.Errorf("cancelled metric %v", v)
				}
				return
			}
			// drain: the answer is generated to its end with nobody
			// listening, and counted.
			g.send(" after", " more")
			g.finish()
			h.logs.waitFor(t, `"msg":"stream finished"`)
			full := h.replay(t, resumeURL)
			if e := decodeEvent(t, full[len(full)-1]); e.Type != "done" || e.Usage == nil {
				t.Errorf("terminal event %+v", e)
			}
			if v := h.metric(t, "gateway_stream_unattended_tokens_total"); v != 2 {
				t.Errorf("unattended tokens %v, want 2", v)
			}
			select {
			case <-g.cancelled:
				t.Error("drain cancelled the upstream")
			default:
			}
		})
	}
}

// TestDetachedStreamWaitsForFirstReader: POST /v1/streams with nobody ever
// coming is cancelled after the grace period.
func TestDetachedStreamWaitsForFirstReader(t *testing.T) {
	g := newGatedUpstream(t)
	h := newHarness(t, resumeConfig(g, "streams:\n  last_reader_grace: 20ms\n"))
	resp := h.post(t, context.Background(), "/v1/streams", `{"model":"up-model","prompt":"hi"}`)
	if body := drainClose(resp); resp.StatusCode != http.StatusCreated {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	g.waitCancelled(t)
}

func TestLastReaderPolicyResolution(t *testing.T) {
	h := newHarness(t, newConfig("", `  drained:
    last_reader: drain
    routes: [{provider: mock}]
`)+`streams:
  last_reader: continue
  last_reader_grace: 7s
`, func(c *config.Config) {
		g := config.Duration(time.Second)
		c.Keys = map[string]config.Key{"k": {LastReaderPolicy: config.LastReaderPolicy{LastReader: "cancel", LastReaderGrace: &g}}}
	})
	for _, tc := range []struct {
		model, key, policy string
		grace              time.Duration
	}{
		{"mock-gpt", "", "continue", 7 * time.Second},
		{"drained", "", "drain", 7 * time.Second},
		{"drained", "k", "cancel", time.Second},
	} {
		if p, g := resumable.Policy(h.srv.cur.Load().cfg, tc.model, tc.key); p != tc.policy || g != tc.grace {
			t.Errorf("%s/%q: %s %s, want %s %s", tc.model, tc.key, p, g, tc.policy, tc.grace)
		}
	}
}

// TestStreamAccess: events URLs open with their token (or the key that
// started the stream), and with nothing else.
func TestStreamAccess(t *testing.T) {
	h := newHarness(t, keysConfig("      requests_per_minute: 600"))
	resp := h.do(t, context.Background(), http.MethodPost, "/v1/streams", frontendKey, streamBody)
	var created struct {
		ID        string `json:"id"`
		EventsURL string `json:"events_url"`
	}
	if err := json.Unmarshal([]byte(drainClose(resp)), &created); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %v", resp.StatusCode, err)
	}
	u, _ := url.Parse(created.EventsURL)
	token := u.Query().Get("token")
	base := "/v1/streams/" + created.ID
	expired := h.srv.hub.Token(created.ID, time.Now().Add(-time.Minute).Unix())
	other := h.srv.hub.Token("str_AAAAAAAAAAAAAAAAAAAAAA", time.Now().Add(time.Minute).Unix())
	for _, tc := range []struct {
		name, path, key string
		status          int
		code            string
	}{
		{"token", created.EventsURL, "", 200, ""},
		{"owner key", base, frontendKey, 200, ""},
		{"nothing", base, "", 401, "invalid_api_key"},
		{"another key", base, batchKey, 403, "stream_forbidden"},
		{"forged token", base + "?token=" + token[:len(token)-2] + "AA", "", 403, "invalid_stream_token"},
		{"expired token", base + "?token=" + url.QueryEscape(expired), "", 403, "invalid_stream_token"},
		{"another stream's token", base + "?token=" + other, "", 403, "invalid_stream_token"},
		{"malformed token", base + "?token=nope", "", 403, "invalid_stream_token"},
		{"unknown id", "/v1/streams/str_AAAAAAAAAAAAAAAAAAAAAA?token=" + other, "", 404, "stream_not_found"},
		{"not an id", "/v1/streams/nope?token=x", "", 404, "stream_not_found"},
		{"bad Last-Event-ID", created.EventsURL + "&last_event_id=x", "", 400, "invalid_last_event_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.do(t, context.Background(), http.MethodGet, tc.path, tc.key, "")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, drainClose(resp))
			}
			if tc.code == "" {
				if evs := rest(t, newSSEReader(resp.Body)); len(evs) < 3 {
					t.Errorf("events %s", render(evs))
				}
				resp.Body.Close()
				return
			}
			if e := readError(t, resp); e.Error.Code != tc.code {
				t.Errorf("code %q, want %q (%s)", e.Error.Code, tc.code, e.Error.Message)
			}
		})
	}
	if strings.Contains(h.logs.String(), token) {
		t.Error("a token reached the logs")
	}
}

// TestRetentionExpiry: a finished stream is replayable for the retention
// time, then 404.
func TestRetentionExpiry(t *testing.T) {
	clock := testclock.New(time.Now())
	h := newHarnessWith(t, newConfig("", ""), []Option{WithClock(clock.Now)}, func(c *config.Config) { c.Streams.Retention = config.Duration(5 * time.Minute) })
	_, raw, _ := h.streamNative(t, `{"model":"mock-gpt","prompt":"hi"}`)
	_, resumeURL := connectedEvent(t, raw[0])
	h.logs.waitFor(t, `"msg":"stream finished"`)
	clock.Add(4 * time.Minute)
	if evs := h.replay(t, resumeURL); render(evs) != render(raw) {
		t.Errorf("replay within retention:\n%s\nlive:\n%s", render(evs), render(raw))
	}
	clock.Add(2 * time.Minute)
	resp := h.openEvents(t, context.Background(), resumeURL)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after retention: %d", resp.StatusCode)
	}
	if e := readError(t, resp); e.Error.Code != "stream_not_found" {
		t.Errorf("code %q", e.Error.Code)
	}
}

// TestStreamMemoryBounds runs many streams through a small store: the
// bytes held stay within the bound (as /metrics reports them), the oldest
// finished streams make way, and a resume from before a long stream's
// retained window says so instead of skipping events.
func TestStreamMemoryBounds(t *testing.T) {
	const total = 32 << 10
	h := newHarness(t, newConfig("", "")+fmt.Sprintf("streams:\n  max_stream_bytes: 8192\n  max_total_bytes: %d\n", total))
	var first, last string
	for i := range 40 {
		_, raw, evs := h.streamNative(t, `{"model":"mock-gpt","prompt":"hi [mock tokens=300]"}`)
		if evs[len(evs)-1].Type != "done" || len(evs) != 302 {
			t.Fatalf("stream %d: %d events ending %+v %+v", i, len(evs), evs[len(evs)-1], evs[len(evs)-1].Error)
		}
		_, url := connectedEvent(t, raw[0])
		if i == 0 {
			first = url
		}
		last = url
		if _, b := h.srv.hub.Stats(); b > total {
			t.Fatalf("after stream %d: %d bytes held, bound %d", i, b, total)
		}
	}
	metrics := drainClose(h.do(t, context.Background(), http.MethodGet, "/metrics", "", ""))
	if !strings.Contains(metrics, "gateway_stream_store_bytes ") {
		t.Errorf("/metrics lacks the store gauge:\n%.500s", metrics)
	}
	resp := h.openEvents(t, context.Background(), first)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("oldest stream: %d", resp.StatusCode)
	}
	resp.Body.Close()

	// The newest stream kept its tail only.
	evs := h.replay(t, last)
	if len(evs) != 1 || !strings.Contains(evs[0].Data, `"code":"resume_gap"`) || evs[0].ID != "" {
		t.Errorf("resume from before the window: %s", render(evs))
	}
	tail := h.replay(t, last+"&last_event_id=300")
	if len(tail) != 2 || decodeEvent(t, tail[1]).Type != "done" {
		t.Errorf("tail: %s", render(tail))
	}
}

// TestNamedEventsOnResume: named_events=true adds event: lines for
// EventSource listeners.
func TestNamedEventsOnResume(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	_, raw, _ := h.streamNative(t, `{"model":"mock-gpt","prompt":"hi [mock tokens=2]"}`)
	_, u := connectedEvent(t, raw[0])
	h.logs.waitFor(t, `"msg":"stream finished"`)
	var types []string
	for _, ev := range h.replay(t, u+"&named_events=true") {
		types = append(types, ev.ID+ev.Event)
	}
	if got := strings.Join(types, ","); got != "1connected,2delta,3delta,4done" {
		t.Errorf("named events %s", got)
	}
}
