package providers

import (
	"context"
	"io"
	"net"
	"net/http/httptrace"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// A relay writes the frames of the events that arrived together in one
// piece, and must write them before it waits for more (issue 18). Above
// the socket it cannot tell when it is about to: a read of the response
// body may return from the transport's buffer or go to the network, and
// flushing before every body read made a write to the client for each
// kilobyte the transport's small buffer holds, where a byte-copying proxy
// makes one per read from the network. waitConn, the connection
// NewTransport dials, reads ahead and tells.
//
// While a reader has armed a Waiter around its read of the body, the
// connection reads what the socket holds (up to aheadSize) in one system
// call into a pooled buffer, and serves the transport's small buffer from
// it: with events back to back that was four reads from the network
// instead of one. The buffer is held only until it is read out, never
// while the stream waits (a raw read takes it only once the socket is
// readable), so an open stream keeps no more memory than before.
//
// The reader flushes before a read of the body only when nothing is read
// ahead (Waiter.Pending): then the read goes to the network, or takes the
// last of what the transport holds. It flushes there, on its own stack,
// and not inside the connection's read under the transport's frames: that
// made a stream's handler outgrow its 8 KiB stack, 7 KiB more per open
// stream. Only a read of the body that consumes what is read ahead
// without returning any of it (chunk framing) and then goes to the
// network calls the Waiter's function from inside: rare, and needed, or
// the frames would wait for the upstream's next bytes.

// aheadSize is the most one read from the network takes in for an armed
// reader: about 90 chat chunks. What one read takes in is what the relay
// writes in one flush, and net/http writes an HTTP/1 response through a
// 4 KiB buffer: at 4 KiB here, every burst a little over 4 KiB once
// re-encoded went out as two writes, 4 KiB and the rest (issue 18). A
// byte-copying proxy reads up to its 32 KiB copy buffer. The buffer is
// pooled and held only while read out, so its size costs an open stream
// nothing.
const aheadSize = 16 << 10

var aheads = sync.Pool{New: func() any { b := make([]byte, aheadSize); return &b }}

// waitConn is a TCP connection whose reads, while a Waiter is armed, go
// through raw reads: those take the pooled buffer to read ahead into only
// once the socket is readable, and give it back if it was not.
type waitConn struct {
	// net.Conn, not *net.TCPConn: its WriteTo would read past ahead.
	net.Conn
	raw  syscall.RawConn
	hook atomic.Pointer[Waiter]
	// ahead[r:w] was read from the network and not yet returned; nil
	// when nothing is. Reads of a connection never overlap (the
	// transport reads it from one goroutine at a time), so these need
	// no lock.
	ahead *[]byte
	r, w  int
	// held says ahead is set, for Waiter.Pending, which may be asked
	// while the transport's goroutine reads.
	held atomic.Bool
	// rd and readFn serve readArmed.
	rd     rawRead
	readFn func(fd uintptr) bool
}

// dialWaiting wraps dial's TCP connections in a waitConn.
func dialWaiting(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil
		}
		raw, err := tc.SyscallConn()
		if err != nil {
			return c, nil
		}
		wc := &waitConn{Conn: tc, raw: raw}
		wc.readFn = wc.read
		return wc, nil
	}
}

func (c *waitConn) Read(p []byte) (int, error) {
	if c.ahead != nil {
		n := copy(p, (*c.ahead)[c.r:c.w])
		c.r += n
		if c.r == c.w {
			aheads.Put(c.ahead)
			c.ahead = nil
			c.held.Store(false)
		}
		return n, nil
	}
	w := c.hook.Load()
	if w == nil || len(p) == 0 {
		return c.Conn.Read(p)
	}
	return c.readArmed(p, w)
}

// readArmed calls w, then reads as net's own Read does, except that a
// small read takes in what the socket holds, up to aheadSize.
func (c *waitConn) readArmed(p []byte, w *Waiter) (int, error) {
	w.fire()
	c.rd = rawRead{p: p}
	err := c.raw.Read(c.readFn)
	rd := &c.rd
	buf, n := rd.buf, rd.n
	if err == nil && rd.err != nil {
		err = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", rd.err)}
	}
	c.rd = rawRead{}
	if err != nil || n <= 0 {
		if buf != nil {
			aheads.Put(buf)
		}
		if err == nil {
			return 0, io.EOF
		}
		// The raw read's own errors (closed, deadline) are read errors
		// to the transport.
		if oe, ok := err.(*net.OpError); ok && oe.Op == "raw-read" {
			oe.Op = "read"
		}
		return 0, err
	}
	if buf == nil {
		return n, nil
	}
	m := copy(p, (*buf)[:n])
	if m < n {
		c.ahead, c.r, c.w = buf, m, n
		c.held.Store(true)
	} else {
		aheads.Put(buf)
	}
	return m, nil
}

// rawRead is one armed read's state: its callback is a method value made
// once per connection, since a closure over locals would move them to
// the heap on every read.
type rawRead struct {
	p   []byte
	buf *[]byte // pooled, when p is small
	n   int
	err error
}

// read is the raw read's callback: false means the socket is empty and
// the read waits.
func (c *waitConn) read(fd uintptr) bool {
	rd := &c.rd
	dst := rd.p
	if len(dst) < aheadSize {
		if rd.buf == nil {
			rd.buf = aheads.Get().(*[]byte)
		}
		dst = *rd.buf
	}
	for {
		rd.n, rd.err = syscall.Read(int(fd), dst)
		if rd.err != syscall.EINTR {
			break
		}
	}
	if rd.err != syscall.EAGAIN {
		return true
	}
	// Nothing is held while waiting.
	if rd.buf != nil {
		aheads.Put(rd.buf)
		rd.buf = nil
	}
	return false
}

// A Waiter calls a function when a read of one HTTP/1 response's body is
// about to go to the network. Its reader arms it around each read of the
// body; the function may run on the transport's goroutine (which reads
// the connection once the body has ended), and Disarm waits for it.
type Waiter struct {
	conn  *waitConn
	mu    sync.Mutex
	fn    func()
	fired bool
}

// WaiterFor returns a Waiter for the connection an HTTP/1 response came
// on (what httptrace's GotConn reports), or nil when the connection was
// not dialed by NewTransport's transport. It must not be used for an
// HTTP/2 response: that connection carries other streams.
func WaiterFor(conn net.Conn) *Waiter {
	if t, ok := conn.(interface{ NetConn() net.Conn }); ok { // TLS
		conn = t.NetConn()
	}
	if c, ok := conn.(*waitConn); ok {
		return &Waiter{conn: c}
	}
	return nil
}

// Arm makes fn (if not nil) run once if a read of the connection goes to
// the network before Disarm; until then reads take in what the socket
// holds.
func (w *Waiter) Arm(fn func()) {
	w.mu.Lock()
	w.fn, w.fired = fn, false
	w.mu.Unlock()
	w.conn.hook.Store(w)
}

// Disarm undoes Arm, waiting for fn if it is running, and says whether
// it ran.
func (w *Waiter) Disarm() bool {
	// The connection may have gone on to another response, armed by
	// another Waiter: leave that one.
	w.conn.hook.CompareAndSwap(w, nil)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fn = nil
	return w.fired
}

// Pending says the connection holds bytes read ahead: the next read
// takes them without going to the network.
func (w *Waiter) Pending() bool { return w.conn.held.Load() }

func (w *Waiter) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fn != nil {
		fn := w.fn
		w.fn, w.fired = nil, true
		fn()
	}
}

// ConnTrace is where WatchConn records the connection a request went
// out on.
type ConnTrace struct{ Conn net.Conn }

// WatchConn returns ctx with an httptrace hook that records in into the
// connection each request under it gets.
func WatchConn(ctx context.Context, into *ConnTrace) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: into.got})
}

func (t *ConnTrace) got(info httptrace.GotConnInfo) { t.Conn = info.Conn }
