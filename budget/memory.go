package budget

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

var _ Store = (*Memory)(nil)

// Seed returns what client spent since from, as recorded elsewhere (the
// usage ledger): a process keeping budgets in memory starts each window
// from it, so a restart does not hand every key a fresh budget.
type Seed func(ctx context.Context, client string, from time.Time) (Spend, error)

// Memory keeps budget windows in this process. Windows that have reset
// are dropped as new ones open, so it holds about one per client and
// budget.
type Memory struct {
	seed Seed
	log  *slog.Logger

	mu      sync.Mutex
	windows map[windowKey]*window
}

type windowKey struct{ client, id string }

type window struct {
	// held is spend plus reservations, spent spend alone.
	held, spent Spend
	reset       time.Time
}

// seedTimeout bounds reading a window's seed.
const seedTimeout = 2 * time.Second

// NewMemory returns an in-process store; seed and log may be nil.
func NewMemory(seed Seed, log *slog.Logger) *Memory {
	if log == nil {
		log = slog.Default()
	}
	return &Memory{seed: seed, log: log, windows: map[windowKey]*window{}}
}

// Close implements Store.
func (m *Memory) Close() error { return nil }

// get returns the window of l at now, opening (and seeding) it if need
// be. The seed is read before the lock is taken, and only the first
// opener's is kept. A seed that cannot be read (the ledger's database
// is down) opens the window from zero rather than refuse the key's
// requests: it is logged, as the budget then under-counts.
func (m *Memory) get(ctx context.Context, client string, l Limits, now time.Time) (*window, error) {
	id, reset := l.Window(now)
	k := windowKey{client, id}
	m.mu.Lock()
	w := m.windows[k]
	m.mu.Unlock()
	if w != nil {
		return w, nil
	}
	var seeded Spend
	if m.seed != nil {
		from := time.Time{}
		if l.Period != Total {
			from = windowStart(l, now)
		}
		// Not the request's context: a client leaving must not leave its
		// key's window unseeded.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), seedTimeout)
		var err error
		seeded, err = m.seed(sctx, client, from)
		cancel()
		if err != nil {
			m.log.Warn("budget: cannot read the key's spend so far; counting this window from zero", "key", client, "window", id, "error", err.Error())
			seeded = Spend{}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if w = m.windows[k]; w != nil {
		return w, nil
	}
	for k, old := range m.windows {
		if !old.reset.IsZero() && !now.Before(old.reset) {
			delete(m.windows, k)
		}
	}
	w = &window{held: clamp(seeded), spent: clamp(seeded), reset: reset}
	m.windows[k] = w
	return w, nil
}

// windowStart is when the window of l at now began.
func windowStart(l Limits, now time.Time) time.Time {
	_, reset := l.Window(now)
	if l.Period == Day {
		return reset.AddDate(0, 0, -1)
	}
	return reset.AddDate(0, -1, 0)
}

// Reserve implements Store.
func (m *Memory) Reserve(ctx context.Context, client string, l Limits, now time.Time, r Spend) (Decision, Hold, error) {
	w, err := m.get(ctx, client, l, now)
	if err != nil {
		return Decision{}, nil, err
	}
	r = clamp(r)
	m.mu.Lock()
	defer m.mu.Unlock()
	ok, kind := decide(l, w.held, r)
	d := Decision{Allowed: ok, Kind: kind, Reset: w.reset}
	if !ok {
		d.Spend = w.held
		return d, nil, nil
	}
	w.held.Cost += r.Cost
	w.held.Tokens += r.Tokens
	d.Spend = w.held
	return d, &memoryHold{m: m, w: w, reserved: r}, nil
}

// Spent implements Store.
func (m *Memory) Spent(ctx context.Context, client string, l Limits, now time.Time) (Spend, error) {
	w, err := m.get(ctx, client, l, now)
	if err != nil {
		return Spend{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return w.spent, nil
}

type memoryHold struct {
	m        *Memory
	w        *window
	reserved Spend
	done     bool
}

func (h *memoryHold) Settle(used Spend) (before, after Spend) {
	used = clamp(used)
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if h.done {
		return Spend{}, Spend{}
	}
	h.done = true
	h.w.held.Cost = min(h.w.held.Cost-h.reserved.Cost+used.Cost, maxNanos)
	h.w.held.Tokens = min(h.w.held.Tokens-h.reserved.Tokens+used.Tokens, maxNanos)
	before = h.w.spent
	h.w.spent.Cost = min(before.Cost+used.Cost, maxNanos)
	h.w.spent.Tokens = min(before.Tokens+used.Tokens, maxNanos)
	return before, h.w.spent
}
