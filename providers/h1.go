package providers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"syscall"
	"time"
)

// h1Transport carries requests to upstreams reached over plain HTTP/1.1
// (a local vLLM, Ollama or LM Studio, a sidecar, a mock) on the caller's
// own goroutine: it writes the request and hands back a response whose
// body the caller reads straight from the connection.
//
// Why not net/http's Transport: it keeps two goroutines per HTTP/1.1
// connection (one writes requests, one reads responses and hands them
// over), and an open stream holds its connection. At 10,000 open streams
// those were 20,000 goroutines, 8 KiB of stacks and some 4 KiB of
// per-connection state a stream, and each request crossed between three
// goroutines before its first byte (issue 18: 54 → 43 KiB a stream, 11%
// less CPU a request). The protocol stays net/http's: the request is
// written by http.Request.Write and the response parsed by
// http.ReadResponse, chunked bodies and all; what is here is the pool of
// connections and what ends a call.
//
// Everything else (https, where HTTP/2 shares a connection among streams;
// a request that an HTTP proxy from the environment must carry) goes to
// the fallback Transport.
type h1Transport struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback *http.Transport
	mu       sync.Mutex
	// idle holds each address's kept connections, the one kept last at
	// the end.
	idle map[string][]*h1Conn
}

const (
	// h1MaxIdle is how many connections to one address are kept between
	// requests, as the fallback's MaxIdleConnsPerHost.
	h1MaxIdle = 256
	// h1IdleTimeout drops a connection unused for longer (net/http's
	// default).
	h1IdleTimeout = 90 * time.Second
	// h1ReadBuffer is each connection's read buffer, held as long as the
	// connection is: the stream reader's connection reads ahead into a
	// pooled buffer of its own (waitconn.go), so this one stays small.
	// Header lines may be longer (net/http reads them on); a chunk's size
	// line, extensions included, must fit. 512 bytes held 10,000 open
	// streams 3 to 5 MB less, but cost Responses streams 17% more CPU a
	// chunk at 64 streams, chat and messages none (issue 18,
	// docs/benchmarks.md): 1 KiB until that is understood.
	h1ReadBuffer = 1 << 10
)

// h1Conn is a connection with what it has read and not yet parsed.
type h1Conn struct {
	conn   net.Conn
	br     *bufio.Reader
	idleAt time.Time
}

// h1Writers buffer a request while it is written, then go back: a
// request's headers and body go out in one or a few writes, and no
// connection holds a write buffer between requests.
var h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

func newH1Transport(dial func(ctx context.Context, network, addr string) (net.Conn, error), fallback *http.Transport) *h1Transport {
	return &h1Transport{dial: dial, fallback: fallback, idle: map[string][]*h1Conn{}}
}

func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || t.proxied(req) {
		return t.fallback.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	ctx := req.Context()
	for {
		c, reused, err := t.get(ctx, addr)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.exchange(req, addr, c, reused)
		var nw nothingWritten
		if err == nil || !reused || !errors.As(err, &nw) || ctx.Err() != nil {
			return resp, err
		}
		// A kept connection the upstream had closed, found only by
		// writing to it: nothing of the request went out, so it goes
		// again on another connection, as net/http does.
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, errors.Join(err, gerr)
			}
			again := *req
			again.Body = body
			req = &again
		}
	}
}

// proxied says a proxy from the environment (HTTP_PROXY, NO_PROXY) takes
// req: the fallback speaks to proxies.
func (t *h1Transport) proxied(req *http.Request) bool {
	if t.fallback.Proxy == nil {
		return false
	}
	u, err := t.fallback.Proxy(req)
	return err != nil || u != nil
}

// get returns a kept connection to addr that is still open, or a new one.
func (t *h1Transport) get(ctx context.Context, addr string) (*h1Conn, bool, error) {
	for {
		c := t.take(addr)
		if c == nil {
			break
		}
		if alive(c) {
			return c, true, nil
		}
		c.conn.Close()
	}
	conn, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{conn: conn, br: bufio.NewReaderSize(conn, h1ReadBuffer)}, false, nil
}

// take removes the connection to addr kept last, closing those kept for
// longer than h1IdleTimeout.
func (t *h1Transport) take(addr string) *h1Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.idle[addr]
	n := len(l)
	if n == 0 {
		return nil
	}
	c := l[n-1]
	if time.Since(c.idleAt) > h1IdleTimeout {
		// Kept in order: every one below was kept earlier still.
		for _, old := range l {
			old.conn.Close()
		}
		delete(t.idle, addr)
		return nil
	}
	l[n-1] = nil
	t.idle[addr] = l[:n-1]
	return c
}

// put keeps c for the next request to addr.
func (t *h1Transport) put(addr string, c *h1Conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	if len(t.idle[addr]) < h1MaxIdle {
		t.idle[addr] = append(t.idle[addr], c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.conn.Close()
}

// release ends a call whose answer was read to its end: its connection
// is kept if both sides allow (keep) and the call's context had not
// already closed it (stop reports whether it stopped the closing in time).
func (t *h1Transport) release(addr string, c *h1Conn, stop func() bool, keep bool) {
	if stop() && keep {
		t.put(addr, c)
		return
	}
	c.conn.Close()
}

// CloseIdleConnections closes the kept connections, the fallback's too.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	t.mu.Unlock()
	for _, l := range idle {
		for _, c := range l {
			c.conn.Close()
		}
	}
	t.fallback.CloseIdleConnections()
}

// alive says a kept connection can carry a request: nothing unread in
// its buffers, and the upstream has neither closed it nor sent anything
// since (net/http's reader goroutine watches for that; here one
// non-blocking peek does).
func alive(c *h1Conn) bool {
	if c.br.Buffered() > 0 {
		return false
	}
	var raw syscall.RawConn
	switch conn := c.conn.(type) {
	case *waitConn:
		if conn.held.Load() {
			return false
		}
		raw = conn.raw
	case syscall.Conn:
		var err error
		if raw, err = conn.SyscallConn(); err != nil {
			return false
		}
	default:
		return true
	}
	open := false
	err := raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // never wait
	})
	return err == nil && open
}

// nothingWritten is a failure to send a request of which no byte
// reached the connection.
type nothingWritten struct{ err error }

func (e nothingWritten) Error() string { return e.err.Error() }
func (e nothingWritten) Unwrap() error { return e.err }

// counter counts what reaches the connection.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// exchange sends req on c and reads the response's head. The call's
// context closes the connection when it ends, which is what stops a
// write or a read that waits on the upstream.
func (t *h1Transport) exchange(req *http.Request, addr string, c *h1Conn, reused bool) (*http.Response, error) {
	ctx := req.Context()
	if tr := httptrace.ContextClientTrace(ctx); tr != nil && tr.GotConn != nil {
		tr.GotConn(httptrace.GotConnInfo{Conn: c.conn, Reused: reused, WasIdle: reused})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	cw := counter{w: c.conn}
	bw := h1Writers.Get().(*bufio.Writer)
	bw.Reset(&cw)
	werr := req.Write(bw)
	if werr == nil {
		werr = bw.Flush()
	}
	bw.Reset(nil)
	h1Writers.Put(bw)
	fail := func(err error) (*http.Response, error) {
		stop()
		c.conn.Close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	if werr != nil && cw.n == 0 {
		return fail(nothingWritten{fmt.Errorf("write request: %w", werr)})
	}
	// An upstream may answer (an early error) before it has read the
	// whole request: that answer is the one to return.
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		if werr != nil {
			return fail(fmt.Errorf("write request: %w", werr))
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // not the end of a body: no answer at all
		}
		return fail(fmt.Errorf("read response: %w", err))
	}
	keep := werr == nil && !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		t.release(addr, c, stop, keep) // nothing to read: free at once
		return resp, nil
	}
	resp.Body = &h1Body{body: resp.Body, ctx: ctx, t: t, addr: addr, c: c, stop: stop, keep: keep}
	return resp, nil
}

// h1Body is a response body read from its connection, which goes back
// to the pool once the body has been read to its end, and is closed when
// the body is closed before that (as net/http does) or the call's
// context ends.
type h1Body struct {
	body io.ReadCloser
	ctx  context.Context
	t    *h1Transport
	addr string
	c    *h1Conn
	stop func() bool
	keep bool
	// err is how the body ended: io.EOF, a read's failure, or
	// errBodyClosed.
	err error
}

var errBodyClosed = errors.New("http: read on closed response body")

func (b *h1Body) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.err = err
		b.t.release(b.addr, b.c, b.stop, b.keep)
	case err != nil:
		b.stop()
		b.c.conn.Close()
		if b.ctx.Err() != nil {
			err = context.Cause(b.ctx)
		}
		b.err = err
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.err == nil {
		b.stop()
		b.c.conn.Close()
	}
	if b.err == nil || b.err == io.EOF {
		b.err = errBodyClosed
	}
	return nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
