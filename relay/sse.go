package relay

import (
	"net/http"
	"sync"
	"time"
)

// SSE writes Server-Sent Events: every frame goes out in one Write
// followed by a flush, so nothing waits in a buffer. When no frame has gone
// out for the heartbeat interval it sends a ": ping" comment, which keeps
// proxies and load balancers from cutting a stream whose model is still
// thinking. The heartbeat runs on a timer, so writes are serialised by a
// mutex. Writes do not move the timer: each notes its time, and a timer
// that fires after a write sleeps for what is left of the interval (moving
// a timer on every write was 2% of the CPU with tokens back to back).
type SSE struct {
	mu       sync.Mutex
	w        http.ResponseWriter
	rc       *http.ResponseController
	err      error // first write error; the client is gone
	stopped  bool
	interval time.Duration
	hb       *time.Timer
	// last is when a frame last went out, or the stream started.
	last time.Time
	// heartbeat is the frame a heartbeat sends.
	heartbeat []byte

	// writeTimeout bounds each write: a client that stops reading but
	// keeps its connection open would otherwise hold the upstream (and
	// its bill) forever. The deadline is moved only when less than half
	// of it is left, so most writes do not touch it.
	writeTimeout time.Duration
	deadline     time.Time
}

// pingFrame is an SSE comment: clients ignore it, proxies see traffic.
var pingFrame = []byte(": ping\n\n")

// Heartbeater is an optional interface of Format, for a dialect whose
// keep-alive is an event of its own (Anthropic's ping event) rather than
// an SSE comment.
type Heartbeater interface {
	Heartbeat() []byte
}

// SetHeartbeat makes heartbeats send frame, a complete frame, instead of
// a ": ping" comment.
func (s *SSE) SetHeartbeat(frame []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heartbeat = frame
}

// StartSSE sends the status line and SSE headers, and starts heartbeats
// unless interval is 0. Writes that take longer than writeTimeout (0: no
// limit) fail. The caller must call Stop before its handler returns.
func StartSSE(w http.ResponseWriter, interval, writeTimeout time.Duration) *SSE {
	h := w.Header()
	// X-Accel-Buffering tells nginx (and proxies copying it) not to
	// buffer the stream. The values share one array (Set allocates one
	// each), each capped so that nothing appends to it in place.
	v := []string{"text/event-stream", "no-cache", "no"}
	h["Content-Type"], h["Cache-Control"], h["X-Accel-Buffering"] = v[0:1:1], v[1:2:2], v[2:3:3]
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	s := &SSE{w: w, rc: http.NewResponseController(w), interval: interval, writeTimeout: writeTimeout, heartbeat: pingFrame, last: time.Now()}
	if interval > 0 {
		// Held so that a timer firing at once finds s.hb set.
		s.mu.Lock()
		s.hb = time.AfterFunc(interval, s.ping)
		s.mu.Unlock()
	}
	return s
}

// Write sends one or more complete frames and flushes them. After the
// first failure (the client is gone) it fails at once.
func (s *SSE) Write(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.stopped {
		return http.ErrHandlerTimeout
	}
	s.send(frame)
	return s.err
}

// send writes and flushes; s.mu is held.
func (s *SSE) send(frame []byte) {
	now := time.Now()
	s.last = now
	if s.writeTimeout > 0 {
		if s.deadline.Sub(now) < s.writeTimeout/2 {
			s.deadline = now.Add(s.writeTimeout)
			// Writers that cannot take deadlines (tests) go without.
			_ = s.rc.SetWriteDeadline(s.deadline)
		}
	}
	if _, err := s.w.Write(frame); err != nil {
		s.err = err
		return
	}
	if err := s.rc.Flush(); err != nil {
		s.err = err
	}
}

func (s *SSE) ping() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.err != nil {
		return
	}
	if left := s.interval - time.Since(s.last); left > 0 {
		// A frame went out since the timer was set.
		s.hb.Reset(left)
		return
	}
	s.send(s.heartbeat)
	if s.err == nil {
		s.hb.Reset(s.interval)
	}
}

// Stop ends heartbeats. After it returns nothing writes to w again, so the
// handler may return.
func (s *SSE) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.hb != nil {
		s.hb.Stop()
	}
}
