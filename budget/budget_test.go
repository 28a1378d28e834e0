package budget

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/redistest"
)

func newRedis(t *testing.T, addr string, failOpen bool) *Redis {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: 0, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
	s := NewRedis(RedisOptions{Client: c, FailOpen: failOpen, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { s.Close() })
	return s
}

// stores returns, for each backend, a function giving the store of the
// i-th of several replicas (one Memory is one replica).
func stores(t *testing.T) map[string]func(i int) Store {
	mem := NewMemory(nil, nil)
	srv := redistest.Start(t)
	a, b := newRedis(t, srv.Addr, false), newRedis(t, srv.Addr, false)
	return map[string]func(int) Store{
		"memory": func(int) Store { return mem },
		"redis two replicas": func(i int) Store {
			if i%2 == 0 {
				return a
			}
			return b
		},
	}
}

// now is the tests' clock: 2 December, 17:00 UTC, of the year after the
// real one. Redis expires a window's hash by the real clock (a day after
// the window ends), so a fixed date would have every Redis test see its
// spend vanish once that date had passed; December gives the month test
// its turn of the year.
var (
	year = time.Now().UTC().Year() + 1
	now  = time.Date(year, 12, 2, 17, 0, 0, 0, time.UTC)
)

// TestExactlyNOf3N: 3N requests at once, each reserving a third of a cent
// or 100 tokens, against a budget of N of them: exactly N are admitted,
// and settling gives back what was not used.
func TestExactlyNOf3N(t *testing.T) {
	const n = 20
	for name, store := range stores(t) {
		for _, l := range []Limits{
			{Period: Day, Dollars: n * Dollars(0.003)},
			{Period: Month, Tokens: n * 100},
			{Period: Total, Dollars: n * Dollars(0.003), Tokens: n * 100},
		} {
			t.Run(name+"/"+string(l.Period), func(t *testing.T) {
				client := name + string(l.Period)
				holds := make(chan Hold, 3*n)
				var wg sync.WaitGroup
				for i := range 3 * n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						d, h, err := store(i).Reserve(context.Background(), client, l, now, Spend{Cost: Dollars(0.003), Tokens: 100})
						if err != nil {
							t.Error(err)
							return
						}
						if d.Allowed {
							holds <- h
						}
					}()
				}
				wg.Wait()
				close(holds)
				if len(holds) != n {
					t.Fatalf("admitted %d of %d, want %d", len(holds), 3*n, n)
				}
				for h := range holds {
					h.Settle(Spend{Cost: Dollars(0.001), Tokens: 40})
				}
				got, err := store(0).Spent(context.Background(), client, l, now)
				if err != nil {
					t.Fatal(err)
				}
				if want := (Spend{Cost: n * Dollars(0.001), Tokens: n * 40}); got != want {
					t.Fatalf("spent %+v, want %+v", got, want)
				}
			})
		}
	}
}

// TestWindows: a day's budget resets at midnight UTC, a month's on the
// first, a total one never; a refusal says when.
func TestWindows(t *testing.T) {
	for name, store := range stores(t) {
		for _, tc := range []struct {
			period Period
			later  time.Time
			reset  time.Time
		}{
			{Day, now.Add(7 * time.Hour), time.Date(year, 12, 3, 0, 0, 0, 0, time.UTC)},
			{Month, time.Date(year+1, 1, 1, 0, 0, 1, 0, time.UTC), time.Date(year+1, 1, 1, 0, 0, 0, 0, time.UTC)},
			{Total, time.Date(year+4, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
		} {
			t.Run(name+"/"+string(tc.period), func(t *testing.T) {
				s, client := store(0), "w"+name+string(tc.period)
				l := Limits{Period: tc.period, Tokens: 100}
				ctx := context.Background()
				if d, h, _ := s.Reserve(ctx, client, l, now, Spend{Tokens: 100}); !d.Allowed {
					t.Fatal("first request refused")
				} else {
					h.Settle(Spend{Tokens: 100})
				}
				d, _, _ := s.Reserve(ctx, client, l, now, Spend{Tokens: 1})
				if d.Allowed || d.Kind != KindTokens || !d.Reset.Equal(tc.reset) {
					t.Fatalf("over budget: %+v, want refused by tokens, reset %v", d, tc.reset)
				}
				d, _, _ = s.Reserve(ctx, client, l, tc.later, Spend{Tokens: 1})
				if d.Allowed != (tc.period != Total) {
					t.Fatalf("after the window: allowed %v", d.Allowed)
				}
			})
		}
	}
}

func TestSoftCrossedOnce(t *testing.T) {
	l := Limits{Period: Month, SoftDollars: Dollars(1), SoftTokens: 1000}
	s := NewMemory(nil, nil)
	var crossed []string
	for range 3 {
		_, h, _ := s.Reserve(context.Background(), "k", l, now, Spend{Cost: Dollars(2), Tokens: 2000})
		before, after := h.Settle(Spend{Cost: Dollars(0.6), Tokens: 600})
		crossed = append(crossed, Crossed(l, before, after)...)
	}
	if len(crossed) != 2 || crossed[0] != KindDollars || crossed[1] != KindTokens {
		t.Fatalf("crossed %v, want dollars and tokens once", crossed)
	}
}

// TestMemorySeeded: a memory store opens a window from what the ledger
// holds, so a restart keeps the spend.
func TestMemorySeeded(t *testing.T) {
	var asked time.Time
	s := NewMemory(func(_ context.Context, client string, from time.Time) (Spend, error) {
		asked = from
		return Spend{Cost: Dollars(4.5)}, nil
	}, nil)
	l := Limits{Period: Month, Dollars: Dollars(5)}
	if d, _, _ := s.Reserve(context.Background(), "k", l, now, Spend{Cost: Dollars(0.6)}); d.Allowed {
		t.Fatal("a request over what the seeded window has left was admitted")
	}
	if want := time.Date(year, 12, 1, 0, 0, 0, 0, time.UTC); !asked.Equal(want) {
		t.Fatalf("seeded from %v, want %v", asked, want)
	}
}

func TestRedisFailure(t *testing.T) {
	srv := redistest.Start(t)
	open, closed := newRedis(t, srv.Addr, true), newRedis(t, srv.Addr, false)
	srv.Stop()
	l := Limits{Period: Day, Dollars: 1}
	if d, h, err := open.Reserve(context.Background(), "k", l, now, Spend{Cost: 5}); err != nil || !d.Allowed {
		t.Fatalf("fail open: %+v %v", d, err)
	} else {
		h.Settle(Spend{Cost: 5})
	}
	if _, _, err := closed.Reserve(context.Background(), "k", l, now, Spend{Cost: 5}); err == nil {
		t.Fatal("fail closed admitted a request with Redis down")
	}
}

func TestDollars(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want Nanos
	}{{0.000000153, 153}, {-1, 0}, {1e300, maxNanos}, {50, 50e9}} {
		if got := Dollars(tc.in); got != tc.want {
			t.Errorf("Dollars(%g) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestMemorySeedFails: a ledger that cannot be read does not refuse the
// key: its window counts from zero.
func TestMemorySeedFails(t *testing.T) {
	s := NewMemory(func(context.Context, string, time.Time) (Spend, error) {
		return Spend{}, context.DeadlineExceeded
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d, h, err := s.Reserve(context.Background(), "k", Limits{Period: Day, Dollars: Dollars(1)}, now, Spend{Cost: Dollars(0.5)})
	if err != nil || !d.Allowed {
		t.Fatalf("%+v %v", d, err)
	}
	h.Settle(Spend{})
}
