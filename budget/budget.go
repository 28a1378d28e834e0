// Package budget caps what a client may spend, in dollars and in tokens,
// per day, per month (both UTC) or in total. It works as the token rate
// limit does: a request reserves its worst case at admission (its prompt
// and max_tokens at the highest price any of its routes charges), and
// settles with its real cost when it ends, however it ended. A Store keeps
// the windows: Memory in this process, Redis across replicas.
package budget

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Nanos are billionths of a dollar: costs add up exactly, in integers
// Redis can increment atomically.
type Nanos int64

// Dollars converts a cost in dollars, rounding to the nearest nano and
// saturating instead of wrapping round.
func Dollars(d float64) Nanos {
	switch n := math.Round(d * 1e9); {
	case !(n > 0):
		return 0
	case n >= maxNanos:
		return maxNanos
	default:
		return Nanos(n)
	}
}

// maxNanos bounds every amount (2^53: Lua's numbers, which are doubles,
// hold it exactly): nine million dollars.
const maxNanos = 1 << 53

// Float is n in dollars.
func (n Nanos) Float() float64 { return float64(n) / 1e9 }

// Period is the window a budget is counted over.
type Period string

const (
	Day   Period = "day"
	Month Period = "month"
	Total Period = "total"
)

// Limits are one client's budget; a zero amount is unlimited. Soft amounts
// only warn, once, when spend crosses them.
type Limits struct {
	Period      Period
	Dollars     Nanos
	Tokens      int64
	SoftDollars Nanos
	SoftTokens  int64
}

// On reports whether l limits or watches anything.
func (l Limits) On() bool {
	return l.Dollars > 0 || l.Tokens > 0 || l.SoftDollars > 0 || l.SoftTokens > 0
}

// Window is the period of l that t falls in: its id (a day, a month, or
// "total") and when it resets (zero for a total budget, which does not).
func (l Limits) Window(t time.Time) (id string, reset time.Time) {
	t = t.UTC()
	switch l.Period {
	case Day:
		d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return d.Format("2006-01-02"), d.AddDate(0, 0, 1)
	case Month:
		m := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return m.Format("2006-01"), m.AddDate(0, 1, 0)
	default:
		return "total", time.Time{}
	}
}

// Spend is what a window holds: spent plus reserved by requests in flight.
type Spend struct {
	Cost   Nanos
	Tokens int64
}

// Decision is the outcome of a reservation.
type Decision struct {
	Allowed bool
	// Kind is what refused it: dollars or tokens.
	Kind string
	// Spend is the window's after the decision.
	Spend Spend
	// Reset is when the window resets (zero: never).
	Reset time.Time
}

// Kinds of refusal.
const (
	KindDollars = "dollars"
	KindTokens  = "tokens"
)

// Hold is an admitted request's reservation.
type Hold interface {
	// Settle replaces the reservation with what the request used and
	// returns the window's spend (reservations left out) before and
	// after. Only the first call counts; later ones return zeros.
	Settle(used Spend) (before, after Spend)
}

// Store keeps budget windows. Reserve is atomic per client: of N
// concurrent requests each reserving r of a budget of K·r, exactly K are
// admitted.
type Store interface {
	// Reserve admits a request of client reserving r in the window of l
	// that now falls in, if the window's spend plus r stays within every
	// hard amount; a refused request takes nothing.
	Reserve(ctx context.Context, client string, l Limits, now time.Time, r Spend) (Decision, Hold, error)
	// Spent is the spend of client's window of l at now, reservations
	// of requests in flight left out.
	Spent(ctx context.Context, client string, l Limits, now time.Time) (Spend, error)
	Close() error
}

// decide is the rule both stores apply.
func decide(l Limits, have, r Spend) (ok bool, kind string) {
	if l.Dollars > 0 && have.Cost+r.Cost > l.Dollars {
		return false, KindDollars
	}
	if l.Tokens > 0 && have.Tokens+r.Tokens > l.Tokens {
		return false, KindTokens
	}
	return true, ""
}

// clamp bounds a spend a store takes in.
func clamp(s Spend) Spend {
	return Spend{Cost: min(max(s.Cost, 0), maxNanos), Tokens: min(max(s.Tokens, 0), maxNanos)}
}

// Crossed reports the soft amounts of l that a settlement from before to
// after went over: "dollars", "tokens", both or none.
func Crossed(l Limits, before, after Spend) []string {
	var out []string
	if l.SoftDollars > 0 && before.Cost < l.SoftDollars && after.Cost >= l.SoftDollars {
		out = append(out, KindDollars)
	}
	if l.SoftTokens > 0 && before.Tokens < l.SoftTokens && after.Tokens >= l.SoftTokens {
		out = append(out, KindTokens)
	}
	return out
}

// Describe says what l allows, for messages: "$50.00 per month".
func (l Limits) Describe(kind string) string {
	per := " per " + string(l.Period)
	if l.Period == Total {
		per = " in total"
	}
	if kind == KindTokens {
		return fmt.Sprintf("%d tokens%s", l.Tokens, per)
	}
	return fmt.Sprintf("$%.2f%s", l.Dollars.Float(), per)
}
