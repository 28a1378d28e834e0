package limit

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a manual clock for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestStore() (*Memory, *clock) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	return NewMemory(10*time.Minute, 1000, clk.now), clk
}

// admitConcurrently fires n admissions for one client at once, the i-th
// to pick(i), and counts the admitted.
func admitConcurrently(t *testing.T, pick func(i int) Store, n int, client string, l Limits, reserve int) (admitted int, leases []Lease) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			d, lease, err := pick(i).Admit(context.Background(), client, l, reserve)
			if err != nil {
				t.Error(err)
				return
			}
			if d.Allowed {
				mu.Lock()
				admitted++
				leases = append(leases, lease)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	return admitted, leases
}

// testExactlyN checks, for each kind of limit, that of 40 simultaneous
// requests of 100 tokens exactly the limit's worth is admitted, whichever
// store (replica) pick sends each one to.
func testExactlyN(t *testing.T, pick func(i int) Store) {
	for _, tc := range []struct {
		name string
		l    Limits
		want int
	}{
		{"burst of requests", Limits{RequestsPerMinute: 60, Burst: 7}, 7},
		{"concurrent streams", Limits{ConcurrentStreams: 5}, 5},
		{"tokens", Limits{TokensPerMinute: 1000}, 10}, // 100 tokens each
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := admitConcurrently(t, pick, 40, "client-"+tc.name, tc.l, 100); got != tc.want {
				t.Errorf("admitted %d of 40, want %d", got, tc.want)
			}
		})
	}
}

func TestExactlyNAdmitted(t *testing.T) {
	s, _ := newTestStore()
	testExactlyN(t, func(int) Store { return s })
}

func TestRequestsRefillAndRetryAfter(t *testing.T) {
	s, clk := newTestStore()
	l := Limits{RequestsPerMinute: 60, Burst: 2}
	for i := 0; i < 2; i++ {
		if d, _, _ := s.Admit(context.Background(), "k", l, 0); !d.Allowed {
			t.Fatalf("request %d refused", i)
		}
	}
	d, lease, _ := s.Admit(context.Background(), "k", l, 0)
	if d.Allowed || lease != nil || d.Kind != KindRequests || d.RetryAfter != time.Second {
		t.Fatalf("third request: %+v", d)
	}
	if d.Status.LimitRequests != 60 || d.Status.RemainingRequests != 0 || d.Status.ResetRequests != 2*time.Second {
		t.Errorf("status: %+v", d.Status)
	}
	clk.add(time.Second)
	if d, _, _ := s.Admit(context.Background(), "k", l, 0); !d.Allowed {
		t.Errorf("refused after the refill: %+v", d)
	}
}

func TestConcurrencySlotsReleased(t *testing.T) {
	s, _ := newTestStore()
	l := Limits{ConcurrentStreams: 2}
	_, leases := admitConcurrently(t, func(int) Store { return s }, 2, "k", l, 0)
	if d, _, _ := s.Admit(context.Background(), "k", l, 0); d.Allowed || d.Kind != KindConcurrency {
		t.Fatalf("third stream admitted: %+v", d)
	}
	leases[0].Release(0)
	leases[0].Release(0) // twice counts once
	if d, _, _ := s.Admit(context.Background(), "k", l, 0); !d.Allowed {
		t.Fatal("slot not released")
	}
	if d, _, _ := s.Admit(context.Background(), "k", l, 0); d.Allowed {
		t.Fatal("double release freed two slots")
	}
}

func TestTokensSettledWithUsage(t *testing.T) {
	s, clk := newTestStore()
	l := Limits{TokensPerMinute: 600} // 10 per second
	d, lease, _ := s.Admit(context.Background(), "k", l, 500)
	if !d.Allowed || d.Status.RemainingTokens != 100 {
		t.Fatalf("reserve 500: %+v", d)
	}
	if d, _, _ := s.Admit(context.Background(), "k", l, 200); d.Allowed || d.Kind != KindTokens || d.RetryAfter != 10*time.Second {
		t.Fatalf("over the budget: %+v", d)
	}
	lease.Release(50) // used far less than reserved: 450 come back
	d, lease, _ = s.Admit(context.Background(), "k", l, 200)
	if !d.Allowed || d.Status.RemainingTokens != 350 {
		t.Fatalf("after settling: %+v", d)
	}
	lease.Release(700) // used more than reserved: 500 more are owed
	if d, _, _ := s.Admit(context.Background(), "k", l, 1); d.Allowed {
		t.Fatalf("admitted while in debt: %+v", d)
	}
	clk.add(16 * time.Second) // -150 + 160
	if d, _, _ := s.Admit(context.Background(), "k", l, 10); !d.Allowed {
		t.Fatalf("debt not repaid by the refill: %+v", d)
	}
	if d, _, _ := s.Admit(context.Background(), "k", l, 601); d.Allowed || d.RetryAfter != 0 {
		t.Errorf("a request larger than the whole budget: %+v", d)
	}
}

// TestRefusalTakesNothing: a request refused by one limit leaves the
// others untouched.
func TestRefusalTakesNothing(t *testing.T) {
	s, _ := newTestStore()
	l := Limits{RequestsPerMinute: 60, Burst: 3, TokensPerMinute: 100}
	if d, _, _ := s.Admit(context.Background(), "k", l, 150); d.Allowed || d.Kind != KindTokens {
		t.Fatalf("%+v", d)
	}
	for i := 0; i < 3; i++ {
		if d, _, _ := s.Admit(context.Background(), "k", l, 10); !d.Allowed {
			t.Fatalf("request %d refused: the token refusal spent a request (%+v)", i, d)
		}
	}
}

func TestIdleClientsEvicted(t *testing.T) {
	s, clk := newTestStore()
	l := Limits{RequestsPerMinute: 60}
	for i := 0; i < 500; i++ {
		_, lease, _ := s.Admit(context.Background(), fmt.Sprint("ip-", i), l, 0)
		lease.Release(0)
	}
	_, held, _ := s.Admit(context.Background(), "streaming", Limits{ConcurrentStreams: 1}, 0)
	clk.add(11 * time.Minute)
	_, _, _ = s.Admit(context.Background(), "new", l, 0)
	if n := s.Len(); n != 2 {
		t.Errorf("%d clients tracked after the TTL, want 2 (the new one and the one streaming)", n)
	}
	held.Release(0)
}

func TestClientsBounded(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewMemory(time.Hour, 100, clk.now)
	var admitted atomic.Int32
	for i := 0; i < 10000; i++ {
		clk.add(time.Second)
		if d, lease, _ := s.Admit(context.Background(), fmt.Sprint("flood-", i), Limits{RequestsPerMinute: 1}, 0); d.Allowed {
			admitted.Add(1)
			lease.Release(0)
		}
	}
	if n := s.Len(); n > 100 {
		t.Errorf("%d clients tracked, limit 100", n)
	}
	if admitted.Load() != 10000 {
		t.Errorf("distinct clients were refused: %d admitted", admitted.Load())
	}
}

// TestMemorySaturates: reservations and usage near the largest integer
// neither wrap round nor drive a client's budget into unbounded debt, and
// no wait is negative.
func TestMemorySaturates(t *testing.T) {
	clock := time.Now()
	m := NewMemory(time.Minute, 10, func() time.Time { return clock })
	l := Limits{TokensPerMinute: 600}
	d, _, _ := m.Admit(context.Background(), "c", l, math.MaxInt)
	if d.Allowed || d.RetryAfter < 0 {
		t.Fatalf("a reservation of MaxInt: %+v", d)
	}
	d, lease, _ := m.Admit(context.Background(), "c", l, 10)
	if !d.Allowed {
		t.Fatalf("a small reservation after it: %+v", d)
	}
	lease.Release(math.MaxInt) // an absurd usage report
	d, _, _ = m.Admit(context.Background(), "c", l, 10)
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 2*time.Minute+time.Second {
		t.Fatalf("after the absurd usage: %+v (want a wait of at most two minutes of budget)", d)
	}
	clock = clock.Add(2*time.Minute + time.Second)
	if d, _, _ := m.Admit(context.Background(), "c", l, 10); !d.Allowed {
		t.Errorf("the debt did not end: %+v", d)
	}
}
