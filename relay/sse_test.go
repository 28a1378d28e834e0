package relay

import (
	"net/http/httptest"
	"testing"
	"time"
)

// TestHeartbeatWaitsOutTheInterval: a write does not move the heartbeat's
// timer, so the timer must find, when it fires, whether a frame went out
// since: if one did, it sleeps for what is left of the interval and sends
// nothing; if none did, it sends the ping. ping is called directly (the
// timer's interval is an hour), so nothing here depends on timing.
func TestHeartbeatWaitsOutTheInterval(t *testing.T) {
	rec := httptest.NewRecorder()
	s := StartSSE(rec, time.Hour, 0)
	defer s.Stop()
	if err := s.Write([]byte("data: a\n\n")); err != nil {
		t.Fatal(err)
	}
	s.ping() // the timer firing just after a write
	if got := rec.Body.String(); got != "data: a\n\n" {
		t.Fatalf("after a write, ping sent %q", got)
	}
	s.mu.Lock()
	s.last = s.last.Add(-time.Hour) // the interval has passed in silence
	s.mu.Unlock()
	s.ping()
	if got := rec.Body.String(); got != "data: a\n\n: ping\n\n" {
		t.Fatalf("after a silent interval, body %q", got)
	}
}
