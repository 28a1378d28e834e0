// Package logevery keeps a warning that would repeat on every request
// (a store unreachable) to one line a second.
package logevery

import (
	"sync"
	"time"
)

// Second lets one event a second through; the zero value is ready.
type Second struct {
	mu   sync.Mutex
	last time.Time
}

// Allow reports whether the caller should log now.
func (s *Second) Allow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.last) <= time.Second {
		return false
	}
	s.last = time.Now()
	return true
}
