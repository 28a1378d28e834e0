package providers

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair dials a waitConn to a listener and returns it with the server's
// end of the connection.
func pair(t *testing.T) (*waitConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := dialWaiting((&net.Dialer{}).DialContext)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); srv.Close() })
	wc, ok := c.(*waitConn)
	if !ok {
		t.Fatalf("dialWaiting returned %T", c)
	}
	return wc, srv.(*net.TCPConn)
}

func readFull(t *testing.T, r io.Reader, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWaiterFiresBeforeNetworkReads: an armed read that goes to the
// network calls the waiter first; one served from what an earlier read
// took in does not. A read of an empty socket has called it before the
// data it waits for is even sent.
func TestWaiterFiresBeforeNetworkReads(t *testing.T) {
	c, srv := pair(t)
	burst := bytes.Repeat([]byte("0123456789"), 300) // one write: one segment
	if _, err := srv.Write(burst); err != nil {
		t.Fatal(err)
	}
	// An unarmed read waits for the burst; the rest of it is then in
	// the socket.
	got := readFull(t, c, 1)

	w := WaiterFor(c)
	if w == nil {
		t.Fatal("WaiterFor(waitConn) = nil")
	}
	// The transport's buffer reads 1 KiB at a time: the first read takes
	// the whole rest in, the next ones are served from it.
	var fired []bool
	for len(got) < len(burst) {
		w.Arm(func() {})
		b := make([]byte, 1<<10)
		n, err := c.Read(b)
		fired = append(fired, w.Disarm())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b[:n]...)
	}
	if !bytes.Equal(got, burst) {
		t.Fatal("read back something else than was sent")
	}
	if len(fired) != 3 || !fired[0] || fired[1] || fired[2] {
		t.Fatalf("waiter ran on reads %v; want on the first of three only", fired)
	}
	if c.ahead != nil {
		t.Fatal("read-ahead buffer still held with nothing left in it")
	}

	waiting := make(chan struct{})
	w.Arm(func() { close(waiting) })
	go func() {
		<-waiting
		_, _ = srv.Write([]byte("next"))
	}()
	if b := readFull(t, c, 4); string(b) != "next" {
		t.Fatalf("read %q", b)
	}
	if !w.Disarm() {
		t.Fatal("Disarm says the waiter did not run, yet the data came after it")
	}
}

// TestWaitConnErrors: armed reads fail as net's own reads do, so the
// transport and the gateway's error mapping see the same errors.
func TestWaitConnErrors(t *testing.T) {
	armedRead := func(c *waitConn) error {
		w := WaiterFor(c)
		w.Arm(func() {})
		defer w.Disarm()
		_, err := c.Read(make([]byte, 512))
		return err
	}
	t.Run("end", func(t *testing.T) {
		c, srv := pair(t)
		srv.Close()
		if err := armedRead(c); err != io.EOF {
			t.Fatalf("err = %v, want io.EOF", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, srv := pair(t)
		_ = srv.SetLinger(0)
		srv.Close()
		err := armedRead(c)
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("err = %#v, want a read OpError for ECONNRESET", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, _ := pair(t)
		_ = c.SetReadDeadline(time.Now().Add(-time.Second))
		err := armedRead(c)
		var ne net.Error
		var oe *net.OpError
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("err = %#v, want a read timeout", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := pair(t)
		c.Close()
		if err := armedRead(c); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err = %v, want net.ErrClosed", err)
		}
	})
}

// TestDisarmLeavesTheNextWaiter: a connection that went on to another
// response while the last reader was still disarming keeps its new
// reader's waiter.
func TestDisarmLeavesTheNextWaiter(t *testing.T) {
	c, _ := pair(t)
	first, next := WaiterFor(c), WaiterFor(c)
	first.Arm(func() {})
	next.Arm(func() {})
	first.Disarm()
	if c.hook.Load() != next {
		t.Fatal("disarming the first waiter dropped the next one")
	}
	next.Disarm()
	if c.hook.Load() != nil {
		t.Fatal("still armed after Disarm")
	}
}

func TestWaiterForOtherConnections(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if WaiterFor(a) != nil {
		t.Error("a pipe has no waiter")
	}
	c, _ := pair(t)
	if WaiterFor(tls.Client(c, &tls.Config{})) == nil {
		t.Error("a TLS connection over a waitConn has its waiter")
	}
}
