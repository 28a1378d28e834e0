package limit

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

var _ Store = (*Memory)(nil)

// Memory keeps limiter state in this process. State of a client that has
// sent nothing for the idle TTL (and has no stream open) is evicted, and at
// most maxClients are tracked: a flood of distinct keys or addresses cannot
// grow memory without bound.
type Memory struct {
	ttl        time.Duration
	maxClients int
	now        func() time.Time

	mu         sync.Mutex
	clients    map[string]*client
	lastSweep  time.Time
	stuckUntil time.Time // no forced sweep before this: nothing could go
}

// client is one client's state; its fields are guarded by its own mutex
// so that clients do not contend with each other.
type client struct {
	mu       sync.Mutex
	requests *rate.Limiter
	tokens   bucket
	limits   Limits
	inflight int
	lastSeen time.Time
}

// NewMemory returns an in-process store. now is the clock (time.Now when
// nil), injectable for tests.
func NewMemory(ttl time.Duration, maxClients int, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{ttl: ttl, maxClients: maxClients, now: now, clients: map[string]*client{}}
}

// Close implements Store; a memory store has nothing to stop.
func (m *Memory) Close() error { return nil }

// Len is the number of clients tracked.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.clients)
}

// get returns the client's state, creating it if needed, in one step under
// the store's lock.
func (m *Memory) get(key string, now time.Time) *client {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Sweep every half TTL, and when full; when full of clients with
	// streams open (nothing could go), wait a second before trying again,
	// so the cap is passed for a moment rather than scanned on every
	// request.
	full := len(m.clients) >= m.maxClients && !now.Before(m.stuckUntil)
	if full || now.Sub(m.lastSweep) >= m.ttl/2 {
		m.sweep(now)
	}
	c, ok := m.clients[key]
	if !ok {
		c = &client{}
		m.clients[key] = c
	}
	return c
}

// sweep evicts idle clients; if the store is still full it evicts the
// longest idle tenth of those without open streams, so that a flood of new
// clients pays for one scan every few hundred arrivals. m.mu is held.
func (m *Memory) sweep(now time.Time) {
	m.lastSweep = now
	type cand struct {
		key  string
		seen time.Time
	}
	var evictable []cand
	for k, c := range m.clients {
		c.mu.Lock()
		open, seen := c.inflight > 0, c.lastSeen
		c.mu.Unlock()
		switch {
		case open:
		case now.Sub(seen) >= m.ttl:
			delete(m.clients, k)
		default:
			evictable = append(evictable, cand{k, seen})
		}
	}
	if len(m.clients) < m.maxClients {
		return
	}
	if len(evictable) == 0 {
		m.stuckUntil = now.Add(time.Second)
		return
	}
	slices.SortFunc(evictable, func(a, b cand) int { return a.seen.Compare(b.seen) })
	n := min(len(evictable), max(1, m.maxClients/10, len(m.clients)-m.maxClients+1))
	for _, c := range evictable[:n] {
		delete(m.clients, c.key)
	}
}

// Admit implements Store.
func (m *Memory) Admit(_ context.Context, key string, l Limits, reserve int) (Decision, Lease, error) {
	reserve = clampTokens(reserve)
	now := m.now()
	c := m.get(key, now)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastSeen = now
	c.configure(l, now)

	d := Decision{}
	if l.ConcurrentStreams > 0 && c.inflight >= l.ConcurrentStreams {
		d.Kind, d.RetryAfter = KindConcurrency, time.Second
		d.Status = c.status(now)
		return d, nil, nil
	}
	var r *rate.Reservation
	if c.requests != nil {
		r = c.requests.ReserveN(now, 1)
		if delay := r.DelayFrom(now); !r.OK() || delay > 0 {
			r.CancelAt(now)
			d.Kind, d.RetryAfter = KindRequests, delay
			d.Status = c.status(now)
			return d, nil, nil
		}
	}
	if l.TokensPerMinute > 0 {
		if wait, ok := c.tokens.take(now, float64(reserve)); !ok {
			if r != nil {
				r.CancelAt(now)
			}
			d.Kind, d.RetryAfter = KindTokens, wait
			d.Status = c.status(now)
			return d, nil, nil
		}
	}
	c.inflight++
	d.Allowed = true
	d.Status = c.status(now)
	return d, &memoryLease{m: m, c: c, reserved: reserve, tokens: l.TokensPerMinute > 0}, nil
}

// configure (re)creates the buckets when the client's limits change, as
// after a config reload. c.mu is held.
func (c *client) configure(l Limits, now time.Time) {
	if c.limits == l && (c.requests != nil || l.RequestsPerMinute == 0) {
		return
	}
	c.limits = l
	c.requests = nil
	if l.RequestsPerMinute > 0 {
		c.requests = rate.NewLimiter(rate.Limit(float64(l.RequestsPerMinute)/60), l.burst()) // starts full
	}
	if l.TokensPerMinute > 0 {
		c.tokens = newBucket(float64(l.TokensPerMinute)/60, float64(l.TokensPerMinute), now)
	}
}

// status reports the budgets for the headers. c.mu is held.
func (c *client) status(now time.Time) Status {
	var s Status
	if lim := c.requests; lim != nil {
		avail := lim.TokensAt(now)
		s.LimitRequests = c.limits.RequestsPerMinute
		s.RemainingRequests = max(0, int(math.Floor(avail)))
		s.ResetRequests = untilFull(avail, float64(lim.Burst()), float64(lim.Limit()))
	}
	if c.limits.TokensPerMinute > 0 {
		avail := c.tokens.at(now)
		s.LimitTokens = c.limits.TokensPerMinute
		s.RemainingTokens = max(0, int(math.Floor(avail)))
		s.ResetTokens = untilFull(avail, c.tokens.capacity, c.tokens.rate)
	}
	return s
}

func untilFull(avail, capacity, perSecond float64) time.Duration {
	if avail >= capacity || perSecond <= 0 {
		return 0
	}
	return seconds((capacity - avail) / perSecond)
}

type memoryLease struct {
	m        *Memory
	c        *client
	reserved int
	tokens   bool
	once     sync.Once
}

func (l *memoryLease) Release(used int) {
	l.once.Do(func() {
		now := l.m.now()
		l.c.mu.Lock()
		defer l.c.mu.Unlock()
		l.c.inflight--
		l.c.lastSeen = now
		if l.tokens {
			// Give back what was reserved and not used, or take what was
			// used beyond the reservation (the budget may go into debt).
			l.c.tokens.add(now, float64(l.reserved-clampTokens(used)))
		}
	})
}

// bucket is a token bucket that can also be refunded and go into debt,
// which rate.Limiter cannot: tokens-per-minute reservations are settled
// with the real usage after the fact.
type bucket struct {
	rate, capacity float64
	tokens         float64
	last           time.Time
}

func newBucket(perSecond, capacity float64, now time.Time) bucket {
	return bucket{rate: perSecond, capacity: capacity, tokens: capacity, last: now}
}

func (b *bucket) at(now time.Time) float64 {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		return math.Min(b.capacity, b.tokens+dt*b.rate)
	}
	return b.tokens
}

func (b *bucket) advance(now time.Time) {
	if now.After(b.last) {
		b.tokens, b.last = b.at(now), now
	}
}

// take removes n tokens if they are there; otherwise it reports how long
// until they would be (0 if never: n exceeds the capacity).
func (b *bucket) take(now time.Time, n float64) (time.Duration, bool) {
	b.advance(now)
	if n <= b.tokens {
		b.tokens -= n
		return 0, true
	}
	if n > b.capacity {
		return 0, false
	}
	return seconds((n - b.tokens) / b.rate), false
}

// add returns n tokens (n < 0 takes them), capped at the capacity. Debt
// is bounded by one full bucket: a usage report cannot lock a client out
// for longer than two minutes of its budget.
func (b *bucket) add(now time.Time, n float64) {
	b.advance(now)
	b.tokens = math.Max(-b.capacity, math.Min(b.capacity, b.tokens+n))
}
