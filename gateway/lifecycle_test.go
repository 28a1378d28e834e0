package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
)

// TestDisconnectCancelsUpstream: a client that goes away mid-stream must
// cancel the upstream request (and so stop its bill) at once.
func TestDisconnectCancelsUpstream(t *testing.T) {
	for _, path := range []string{"/v1/stream", "/v1/chat/completions"} {
		t.Run(path, func(t *testing.T) {
			upstreamGone := make(chan struct{})
			up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				writeSSE(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}`+"\n\n")
				<-r.Context().Done() // a model still generating
				close(upstreamGone)
			})
			h := newHarness(t, newConfig(openAIUpstream(up.URL, "sk-x")))
			ctx, cancel := context.WithCancel(context.Background())
			body := `{"model":"up-model","prompt":"hi"}`
			if path != "/v1/stream" {
				body = `{"model":"up-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			}
			resp := h.post(t, ctx, path, body)
			sr := newSSEReader(resp.Body)
			for {
				ev, err := sr.next()
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(ev.Data, "tok") {
					break
				}
			}
			cancel() // the user pressed Stop
			resp.Body.Close()
			select {
			case <-upstreamGone:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream request was not cancelled after the client left")
			}
		})
	}
}

// TestDisconnectWhileWaitingForFirstToken covers the mock, stalled before
// its first token: leaving must end the handler (goleak checks that
// nothing is left running).
func TestDisconnectWhileWaitingForFirstToken(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.post(t, ctx, "/v1/stream", `{"model":"mock-gpt","prompt":"[mock stall_after=0]"}`)
	if ev, err := newSSEReader(resp.Body).next(); err != nil || decodeEvent(t, ev).Type != "connected" {
		t.Fatalf("first frame %+v %v", ev, err)
	}
	cancel()
	resp.Body.Close()
	h.http.Close() // waits for the handler to return
	if !strings.Contains(h.logs.String(), `"end":"client_gone"`) {
		t.Errorf("access log does not say the client left:\n%s", h.logs.String())
	}
}

// serving starts a gateway on a real listener with Serve, as main does.
// The returned wait blocks until Serve has returned and gives its error.
func serving(t *testing.T, yaml string, edit func(*config.Config)) (url string, stop context.CancelFunc, wait func() error) {
	url, stop, wait, _ = servingServer(t, yaml, edit)
	return url, stop, wait
}

// servingServer is serving, which also returns the Server.
func servingServer(t *testing.T, yaml string, edit func(*config.Config)) (url string, stop context.CancelFunc, wait func() error, srv *Server) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	srv, err = New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var serveErr error
	go func() { serveErr = srv.Serve(ctx, ln); close(done) }()
	wait = func() error { <-done; return serveErr }
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return "http://" + ln.Addr().String(), cancel, wait, srv
}

func startStream(t *testing.T, url, prompt string) (*http.Response, *sseReader) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(url+"/v1/stream", "application/json", strings.NewReader(`{"model":"mock-gpt","prompt":"`+prompt+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	sr := newSSEReader(resp.Body)
	if ev, err := sr.next(); err != nil || decodeEvent(t, ev).Type != "connected" {
		t.Fatalf("first frame %+v %v", ev, err)
	}
	return resp, sr
}

// TestGracefulDrain: on shutdown a stream in flight runs to its done event,
// and new connections are refused.
func TestGracefulDrain(t *testing.T) {
	url, stop, wait := serving(t, newConfig("", ""), func(c *config.Config) {})
	resp, sr := startStream(t, url, "[mock tokens=5 delay=40ms]")
	defer resp.Body.Close()
	stop()
	rest := sr.readAll(t)
	if last := decodeEvent(t, rest[len(rest)-1]); last.Type != "done" || len(rest) != 6 {
		t.Fatalf("stream during drain ended with %+v after %d events, want done after 6", last, len(rest))
	}
	if err := wait(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("the server still accepts connections after shutdown")
	}
}

// TestShutdownEndsStreamsAfterDrainTimeout: a stream that outlives the
// drain timeout ends with a server_shutdown error event, not silence.
func TestShutdownEndsStreamsAfterDrainTimeout(t *testing.T) {
	url, stop, wait := serving(t, newConfig("", ""), func(c *config.Config) {
		c.Server.ShutdownTimeout = config.Duration(50 * time.Millisecond)
	})
	resp, sr := startStream(t, url, "[mock stall_after=1]")
	defer resp.Body.Close()
	if ev, err := sr.next(); err != nil || decodeEvent(t, ev).Type != "delta" {
		t.Fatalf("want a delta before stalling: %+v %v", ev, err)
	}
	stop()
	rest := sr.readAll(t)
	if len(rest) != 1 {
		t.Fatalf("got %d events after shutdown, want one error: %+v", len(rest), rest)
	}
	if ev := decodeEvent(t, rest[0]); ev.Type != "error" || ev.Error.Code != "server_shutdown" {
		t.Fatalf("last event = %+v", ev)
	}
	if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve: %v", err)
	}
}

// TestShutdownAndDetachedStreams: a generation with no connection (POST
// /v1/streams) gets the drain time like any stream: Serve waits for one
// that finishes within it, and ends one that does not with
// server_shutdown.
func TestShutdownAndDetachedStreams(t *testing.T) {
	for _, tc := range []struct {
		prompt, end, reason string
	}{
		{"[mock tokens=5 delay=30ms]", `{"type":"done"`, "done"},
		{"[mock stall_after=1]", `"code":"server_shutdown"`, "shutdown"},
	} {
		t.Run(tc.end, func(t *testing.T) {
			url, stop, wait, srv := servingServer(t, newConfig("", ""), func(c *config.Config) {
				c.Server.ShutdownTimeout = config.Duration(time.Second)
			})
			resp, err := http.Post(url+"/v1/streams", "application/json", strings.NewReader(`{"model":"mock-gpt","prompt":"`+tc.prompt+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			var created struct {
				ID string `json:"id"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&created)
			resp.Body.Close()
			stop()
			if err := wait(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Serve: %v", err)
			}
			// Serve returned: the stream has ended, and says how.
			l, err := srv.hub.Memory().Get(created.ID)
			if err != nil {
				t.Fatal(err)
			}
			ev, _, _, _ := l.Read(0)
			var all []string
			ev.Each(func(_ int64, line []byte) { all = append(all, string(line)) })
			if _, finished := l.Last(); !finished || !strings.Contains(all[len(all)-1], tc.end) {
				t.Errorf("after shutdown (finished %v): %s", finished, strings.Join(all, "\n"))
			}
			h := &harness{srv: srv}
			if n := h.metric(t, "gateway_stream_endings_total", "endpoint", "native", "reason", tc.reason); n != 1 {
				t.Errorf("endings %s = %v, want 1", tc.reason, n)
			}
		})
	}
}

func TestCORS(t *testing.T) {
	preflight := func(h *harness, origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, h.http.URL+"/v1/stream", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		resp, err := h.http.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	closed := newHarness(t, newConfig("", ""))
	if resp := preflight(closed, "https://chat.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("CORS allowed with no origins configured")
	}

	open := newHarness(t, newConfig("", ""), func(c *config.Config) {
		c.Server.CORS.AllowedOrigins = []string{"https://chat.example.com"}
	})
	resp := preflight(open, "https://chat.example.com")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://chat.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Content-Type") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := preflight(open, "https://evil.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("CORS allowed an origin not in the list")
	}

	req, _ := http.NewRequest(http.MethodPost, open.http.URL+"/v1/stream", strings.NewReader(`{"model":"mock-gpt","prompt":"x"}`))
	req.Header.Set("Origin", "https://chat.example.com")
	req.Header.Set("Content-Type", "application/json")
	sresp, err := open.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, sresp.Body)
	sresp.Body.Close()
	if !strings.Contains(sresp.Header.Get("Access-Control-Expose-Headers"), "X-Request-ID") {
		t.Errorf("X-Request-ID not exposed: %v", sresp.Header)
	}
}

func TestRequestIDPropagated(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	req, _ := http.NewRequest(http.MethodGet, h.http.URL+"/healthz", nil)
	req.Header.Set("X-Request-ID", "trace-abc.123")
	resp, err := h.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-ID"); got != "trace-abc.123" {
		t.Errorf("X-Request-ID = %q", got)
	}
	req.Header.Set("X-Request-ID", "bad id with spaces <script>")
	resp, _ = h.http.Client().Do(req)
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-ID"); got == "" || strings.Contains(got, " ") {
		t.Errorf("an unsafe X-Request-ID was echoed: %q", got)
	}
}

// TestClientThatStopsReading: a client that keeps its connection open but
// reads nothing must not hold the upstream forever. The handler can only
// return (and Close below only unblock) through the write timeout.
func TestClientThatStopsReading(t *testing.T) {
	h := newHarness(t, newConfig("", ""), func(c *config.Config) {
		c.Server.WriteTimeout = config.Duration(100 * time.Millisecond)
		tokens := 10000000 // more than any socket buffer holds
		c.Providers["mock"].Mock.Tokens = &tokens
	})
	conn, err := net.Dial("tcp", h.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"mock-gpt","prompt":"stream without end"}`
	_, err = io.WriteString(conn, "POST /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "+
		strconv.Itoa(len(body))+"\r\n\r\n"+body)
	if err != nil {
		t.Fatal(err)
	}
	// Read the status line, so the stream is under way, then nothing more.
	// Close waits for the handler to return.
	status := make([]byte, len("HTTP/1.1 200"))
	if _, err := io.ReadFull(conn, status); err != nil || string(status) != "HTTP/1.1 200" {
		t.Fatalf("status line %q: %v", status, err)
	}
	h.http.Close()
	if !strings.Contains(h.logs.String(), `"end":"client_gone"`) {
		t.Errorf("a stalled reader was not dropped:\n%s", h.logs.String())
	}
}

// TestH2C streams over cleartext HTTP/2 when server.h2c is on: many
// streams share one connection, each still flushed event by event.
func TestH2C(t *testing.T) {
	url, _, _ := serving(t, newConfig("", ""), func(c *config.Config) { c.Server.H2C = true })
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	resp, err := client.Post(url+"/v1/stream", "application/json", strings.NewReader(`{"model":"mock-gpt","prompt":"[mock tokens=3]"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
	}
	evs := newSSEReader(resp.Body).readAll(t)
	if len(evs) != 5 || decodeEvent(t, evs[4]).Type != "done" {
		t.Errorf("events over h2c: %+v", evs)
	}
}

// TestPprofOnItsOwnListener: the profiler answers on pprof_listen and not
// on the public address.
func TestPprofOnItsOwnListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pprofAddr := ln.Addr().String()
	ln.Close()
	url, _, _ := serving(t, newConfig("", ""), func(c *config.Config) { c.Server.PprofListen = pprofAddr })

	var resp *http.Response
	for i := 0; i < 100; i++ { // Serve starts the listener asynchronously
		if resp, err = http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1"); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine profile") {
		t.Errorf("pprof: %d %.80s", resp.StatusCode, body)
	}
	resp, err = http.Get(url + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("pprof reachable on the public listener: %d", resp.StatusCode)
	}
}
