package providers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is a test server that counts the connections it accepted and
// tells when one closed.
type upstream struct {
	*httptest.Server
	conns  atomic.Int32
	closed chan struct{}
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{closed: make(chan struct{}, 16)}
	u.Server = httptest.NewUnstartedServer(h)
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			u.conns.Add(1)
		case http.StateClosed:
			u.closed <- struct{}{}
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// events writes n SSE events, each flushed on its own.
func events(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range n {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
		}
	}
}

func get(t *testing.T, c *http.Client, ctx context.Context, url, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return c.Do(req)
}

func readBody(t *testing.T, resp *http.Response) { readAll(t, resp) }

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// TestH1KeepsItsConnections: streamed answers read to their end leave
// their connection for the next request, which goes out on it.
func TestH1KeepsItsConnections(t *testing.T) {
	u := newUpstream(t, events(3))
	c := &http.Client{Transport: NewTransport(time.Second)}
	defer c.CloseIdleConnections()
	for i := range 3 {
		resp, err := get(t, c, context.Background(), u.URL, `{"n":1}`)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != "data: 0\n\ndata: 1\n\ndata: 2\n\n" {
			t.Fatalf("request %d: body %q", i, got)
		}
	}
	if n := u.conns.Load(); n != 1 {
		t.Fatalf("%d connections for three requests in turn, want 1", n)
	}
}

// TestH1DropsConnections: a kept connection is not used again after the
// upstream closed it, after an answer that said Connection: close, or
// after a body closed before its end; the next request opens another.
func TestH1DropsConnections(t *testing.T) {
	for _, tc := range []struct {
		name string
		// first answers the first request; end is what the client does
		// with its body, after which the upstream does after.
		first http.HandlerFunc
		end   func(t *testing.T, resp *http.Response)
		after func(u *upstream)
	}{
		{"closed by the upstream", events(1), readBody, (*upstream).CloseClientConnections},
		{"connection close", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			events(1)(w, r)
		}, readBody, func(*upstream) {}},
		{"body closed early", events(1000), func(t *testing.T, resp *http.Response) {
			buf := make([]byte, 8)
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}, func(*upstream) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var first atomic.Bool
			u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if first.CompareAndSwap(false, true) {
					tc.first(w, r)
					return
				}
				events(1)(w, r)
			})
			c := &http.Client{Transport: NewTransport(time.Second)}
			defer c.CloseIdleConnections()
			resp, err := get(t, c, context.Background(), u.URL, "{}")
			if err != nil {
				t.Fatal(err)
			}
			tc.end(t, resp)
			tc.after(u)
			<-u.closed // the first connection is gone
			resp, err = get(t, c, context.Background(), u.URL, "{}")
			if err != nil {
				t.Fatalf("request after the first connection closed: %v", err)
			}
			if got := readAll(t, resp); got != "data: 0\n\n" {
				t.Fatalf("second body %q", got)
			}
			if n := u.conns.Load(); n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
		})
	}
}

// TestH1CancelStopsTheCall: the end of a call's context stops a read that
// waits on a silent upstream, with the context's cause, and the
// connection is closed, not kept; the same before the answer's head.
func TestH1CancelStopsTheCall(t *testing.T) {
	cause := errors.New("client left")
	for _, head := range []bool{true, false} {
		t.Run(fmt.Sprintf("head sent %v", head), func(t *testing.T) {
			release := make(chan struct{})
			arrived := make(chan struct{}, 1)
			u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				// Read to its end, so that the server notices the
				// connection closing.
				_, _ = io.Copy(io.Discard, r.Body)
				if head {
					w.Header().Set("Content-Type", "text/event-stream")
					fmt.Fprint(w, "data: 0\n\n")
					w.(http.Flusher).Flush()
				}
				arrived <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			defer close(release)
			c := &http.Client{Transport: NewTransport(time.Second)}
			defer c.CloseIdleConnections()
			ctx, cancel := context.WithCancelCause(context.Background())
			var resp *http.Response
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				resp, err = get(t, c, ctx, u.URL, "{}")
				if err == nil {
					buf := make([]byte, 64)
					for err == nil {
						_, err = resp.Body.Read(buf)
					}
					resp.Body.Close()
				}
			}()
			<-arrived
			cancel(cause)
			<-done
			if !errors.Is(err, cause) {
				t.Fatalf("error %v, want the context's cause", err)
			}
			<-u.closed
		})
	}
}

// TestH1RetriesWhatNeverWentOut: a request whose write to a kept
// connection failed before any byte went out is sent again on a new
// connection, its body included.
func TestH1RetriesWhatNeverWentOut(t *testing.T) {
	var bodies []string
	var mu sync.Mutex
	u := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})
	var conns []*failingConn
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		fc := &failingConn{Conn: c}
		conns = append(conns, fc)
		return fc, nil
	}
	tr := newH1Transport(dial, http.DefaultTransport.(*http.Transport).Clone())
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for i, body := range []string{"first", "second"} {
		if i == 1 {
			conns[0].fail.Store(true) // as a write to a connection the upstream reset
		}
		resp, err := get(t, c, context.Background(), u.URL, body)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		readAll(t, resp)
	}
	if len(conns) != 2 || strings.Join(bodies, ",") != "first,second" {
		t.Fatalf("%d connections, bodies %q; want 2 and first,second", len(conns), bodies)
	}
}

type failingConn struct {
	net.Conn
	fail atomic.Bool
}

func (c *failingConn) Write(p []byte) (int, error) {
	if c.fail.Load() {
		return 0, errors.New("connection reset by peer")
	}
	return c.Conn.Write(p)
}

// TestH1LeavesTheRestToNetHTTP: https and requests a proxy from the
// environment carries go through net/http's Transport.
func TestH1LeavesTheRestToNetHTTP(t *testing.T) {
	t.Run("https", func(t *testing.T) {
		srv := httptest.NewTLSServer(events(1))
		defer srv.Close()
		fallback := srv.Client().Transport.(*http.Transport).Clone()
		tr := newH1Transport(func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("h1 dialed an https upstream")
		}, fallback)
		defer tr.CloseIdleConnections()
		resp, err := get(t, &http.Client{Transport: tr}, context.Background(), srv.URL, "{}")
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != "data: 0\n\n" {
			t.Fatalf("body %q", got)
		}
	})
	t.Run("proxy", func(t *testing.T) {
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "via proxy to "+r.URL.String())
		}))
		defer proxy.Close()
		fallback := http.DefaultTransport.(*http.Transport).Clone()
		pu, _ := url.Parse(proxy.URL)
		fallback.Proxy = http.ProxyURL(pu)
		tr := newH1Transport(func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("h1 dialed past the proxy")
		}, fallback)
		defer tr.CloseIdleConnections()
		resp, err := get(t, &http.Client{Transport: tr}, context.Background(), "http://upstream.invalid/v1/chat/completions", "{}")
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != "via proxy to http://upstream.invalid/v1/chat/completions" {
			t.Fatalf("body %q", got)
		}
	})
}

// TestH1NoAnswer: an upstream that closes the connection without an
// answer is an unexpected EOF, never a clean end.
func TestH1NoAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 4096)
		_, _ = c.Read(buf) // the request
		c.Close()
	}()
	c := &http.Client{Transport: NewTransport(time.Second)}
	defer c.CloseIdleConnections()
	_, err = get(t, c, context.Background(), "http://"+ln.Addr().String()+"/", "{}")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("error %v, want an unexpected EOF", err)
	}
}

// TestH1ReadsPastItsBuffer: what outgrows a connection's small read
// buffer still reads: a header line of 8 KiB, events of 5 KiB, and a
// chunk whose size line (an extension in it) nearly fills the buffer.
func TestH1ReadsPastItsBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	event := "data: " + strings.Repeat("e", 5<<10) + "\n\n"
	ext := ";x=" + strings.Repeat("a", h1ReadBuffer-16)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		// Closed once the client is done: closing with its bytes unread
		// could reset what it has yet to read.
		defer func() { _, _ = io.Copy(io.Discard, br) }()
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Long: %s\r\nTransfer-Encoding: chunked\r\n\r\n", strings.Repeat("h", 8<<10))
		fmt.Fprintf(c, "%x\r\n%s\r\n%x%s\r\n%s\r\n0\r\n\r\n", len(event), event, len(event), ext, event)
	}()
	c := &http.Client{Transport: NewTransport(time.Second)}
	defer c.CloseIdleConnections()
	resp, err := get(t, c, context.Background(), "http://"+ln.Addr().String(), "{}")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.Header.Get("X-Long")); n != 8<<10 {
		t.Errorf("header of %d bytes, want %d", n, 8<<10)
	}
	if got := readAll(t, resp); got != event+event {
		t.Errorf("body of %d bytes, want the two events (%d)", len(got), 2*len(event))
	}
}
