package limit

import "sync"

// Pending counts each client's requests from the moment their headers
// are in, before their bodies are read and before a Store admits them:
// a client cannot hold more connections reading bodies than its
// concurrent-stream limit lets it stream. It is per process (a replica
// bounds what it holds itself); its map holds only clients with requests
// in progress.
type Pending struct {
	mu sync.Mutex
	n  map[string]int
}

// NewPending returns an empty counter.
func NewPending() *Pending { return &Pending{n: map[string]int{}} }

// Total is the number of requests in progress.
func (p *Pending) Total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := 0
	for _, n := range p.n {
		t += n
	}
	return t
}

// Hold counts a request of client in, unless max (> 0) are in progress
// already. Release counts it out.
func (p *Pending) Hold(client string, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if max > 0 && p.n[client] >= max {
		return false
	}
	p.n[client]++
	return true
}

// Release counts out a request Hold counted in, once for each.
func (p *Pending) Release(client string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[client]--; p.n[client] <= 0 {
		delete(p.n, client)
	}
}
