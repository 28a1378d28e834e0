package limit

import (
	"context"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/redistest"
)

func newRedisStore(t *testing.T, addr string, ttl time.Duration, failOpen bool, renewed ...func(int)) *Redis {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: 0, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
	o := RedisOptions{Client: c, LeaseTTL: ttl, FailOpen: failOpen, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if len(renewed) > 0 {
		o.Renewed = renewed[0]
	}
	s := NewRedis(o)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRedisTwoReplicasShareBudgets: two stores (two replicas) on one Redis
// admit exactly the budget between them, for each kind of limit.
func TestRedisTwoReplicasShareBudgets(t *testing.T) {
	srv := redistest.Start(t)
	a := newRedisStore(t, srv.Addr, 30*time.Second, false)
	b := newRedisStore(t, srv.Addr, 30*time.Second, false)
	testExactlyN(t, func(i int) Store {
		if i%2 == 1 {
			return b
		}
		return a
	})
}

func TestRedisReleaseAndSettle(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Addr, 30*time.Second, false)
	l := Limits{ConcurrentStreams: 1, TokensPerMinute: 600}
	d, lease, err := s.Admit(context.Background(), "c", l, 500)
	if err != nil || !d.Allowed || d.Status.RemainingTokens != 100 {
		t.Fatalf("%+v %v", d, err)
	}
	if d, _, _ := s.Admit(context.Background(), "c", l, 10); d.Allowed || d.Kind != KindConcurrency {
		t.Fatalf("second stream: %+v", d)
	}
	lease.Release(50)
	d, lease, _ = s.Admit(context.Background(), "c", l, 100)
	if !d.Allowed || d.Status.RemainingTokens < 449 || d.Status.RemainingTokens > 452 {
		t.Fatalf("after release and settling: %+v", d)
	}
	lease.Release(100)
}

// TestRedisLeaseOfDeadReplicaExpires: a replica that stops renewing (it
// died) holds its slots only until the lease TTL.
func TestRedisLeaseOfDeadReplicaExpires(t *testing.T) {
	srv := redistest.Start(t)
	renewed := make(chan struct{}, 8)
	a := newRedisStore(t, srv.Addr, time.Second, false, func(int) {
		select {
		case renewed <- struct{}{}:
		default:
		}
	})
	b := newRedisStore(t, srv.Addr, time.Second, false)
	l := Limits{ConcurrentStreams: 1}
	if d, _, _ := a.Admit(context.Background(), "c", l, 0); !d.Allowed {
		t.Fatal("first stream refused")
	}
	// While a lives, it renews the lease past its TTL: four rounds, a
	// third of the TTL apart, outlast the lease taken at admission.
	timeout := time.After(10 * time.Second)
	for range 4 {
		select {
		case <-renewed:
		case <-timeout:
			t.Fatal("the live replica did not renew its lease")
		}
	}
	if d, _, _ := b.Admit(context.Background(), "c", l, 0); d.Allowed {
		t.Fatal("the slot of a live replica was taken")
	}
	a.Close() // a dies: no release, no renewal
	// Redis's own clock expires the lease: ask again as it runs out.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		d, lease, err := b.Admit(context.Background(), "c", l, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			lease.Release(0)
			return
		}
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatal("the dead replica's slot never expired")
		}
	}
}

func TestRedisOutage(t *testing.T) {
	for _, failOpen := range []bool{true, false} {
		srv := redistest.Start(t)
		s := newRedisStore(t, srv.Addr, 30*time.Second, failOpen)
		l := Limits{RequestsPerMinute: 60}
		if d, _, err := s.Admit(context.Background(), "c", l, 0); err != nil || !d.Allowed {
			t.Fatalf("before the outage: %+v %v", d, err)
		}
		srv.Stop()
		d, lease, err := s.Admit(context.Background(), "c", l, 0)
		if failOpen && (err != nil || !d.Allowed || lease == nil) {
			t.Errorf("fail open during the outage: %+v %v", d, err)
		}
		if !failOpen && err == nil {
			t.Errorf("fail closed admitted during the outage: %+v", d)
		}
		if lease != nil {
			lease.Release(0)
		}
		srv.Restart()
		if d, _, err := s.Admit(context.Background(), "c", l, 0); err != nil || !d.Allowed {
			t.Errorf("not recovered after Redis came back (fail open %v): %+v %v", failOpen, d, err)
		}
	}
}

// TestRedisSaturates: as TestMemorySaturates, with the arithmetic in Lua.
func TestRedisSaturates(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv.Addr, 30*time.Second, false)
	l := Limits{TokensPerMinute: 600}
	d, _, err := s.Admit(context.Background(), "c", l, math.MaxInt)
	if err != nil || d.Allowed || d.RetryAfter < 0 {
		t.Fatalf("a reservation of MaxInt: %+v %v", d, err)
	}
	d, lease, _ := s.Admit(context.Background(), "c", l, 10)
	if !d.Allowed {
		t.Fatalf("a small reservation after it: %+v", d)
	}
	lease.Release(math.MaxInt)
	d, _, err = s.Admit(context.Background(), "c", l, 10)
	if err != nil || d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 2*time.Minute+time.Second {
		t.Fatalf("after the absurd usage: %+v %v (want a wait of at most two minutes of budget)", d, err)
	}
}
