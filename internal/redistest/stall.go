package redistest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// StallProxy is a TCP proxy in front of a Redis that can stop passing
// commands on while the server stays up: a Redis that has stopped
// answering (busy, or partitioned) without refusing connections.
type StallProxy struct {
	Addr string
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	gate  chan struct{} // non-nil while stalled; closed by Release
	held  chan struct{} // closed, and set to nil, once a command is held
	conns map[net.Conn]struct{}
}

// NewStallProxy proxies to the Redis at target until t ends.
func NewStallProxy(t *testing.T, target string) *StallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &StallProxy{Addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept(target)
	t.Cleanup(p.close)
	return p
}

// Stall holds every command sent from now on, until Release. The channel
// it returns is closed once the first is held.
func (p *StallProxy) Stall() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate, p.held = make(chan struct{}), make(chan struct{})
	}
	held := p.held
	if held == nil { // already holding one
		held = make(chan struct{})
		close(held)
	}
	return held
}

// Release passes the held commands on, and everything after them.
func (p *StallProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

func (p *StallProxy) accept(target string) {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(c, s)
			c.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.forward(s, c)
			s.Close()
		}()
	}
}

// forward copies commands from the client c to the server s, holding
// each read while stalled.
func (p *StallProxy) forward(s, c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			if gate != nil && p.held != nil {
				close(p.held) // under mu: two connections may hold at once
				p.held = nil
			}
			p.mu.Unlock()
			if gate != nil {
				<-gate
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *StallProxy) close() {
	p.Release()
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
