// Package limit admits requests within per-client limits: requests per
// minute (a token bucket from golang.org/x/time/rate), concurrent streams,
// and tokens per minute, which a request reserves at admission and settles
// with its real usage when it ends. A Store keeps the state; Memory keeps
// it in this process.
package limit

import (
	"context"
	"time"
)

// Limits are one client's limits; 0 means unlimited.
type Limits struct {
	RequestsPerMinute int
	Burst             int // default: RequestsPerMinute/6, at least 1
	ConcurrentStreams int
	TokensPerMinute   int
}

// Kinds of limit, as reported in Decision.Kind and in metrics.
const (
	KindRequests    = "requests"
	KindTokens      = "tokens"
	KindConcurrency = "concurrency"
)

// Status describes a client's budgets after a decision, for the
// x-ratelimit-* headers. Zero limits are unlimited and not reported.
type Status struct {
	LimitRequests, RemainingRequests int
	ResetRequests                    time.Duration
	LimitTokens, RemainingTokens     int
	ResetTokens                      time.Duration
}

// Decision is the outcome of an admission.
type Decision struct {
	Allowed bool
	// Kind is the limit that refused the request.
	Kind string
	// RetryAfter is when the request could be admitted; 0 when it never
	// could (more tokens than the limit allows in a minute).
	RetryAfter time.Duration
	Status     Status
}

// Lease is an admitted request's hold on its client's budgets.
type Lease interface {
	// Release frees the request's stream slot and settles its token
	// reservation with usedTokens (prompt plus completion). It is safe to
	// call more than once; only the first call counts.
	Release(usedTokens int)
}

// Store admits requests. Admit is atomic per client: of N concurrent
// requests for a limit of K, exactly K are admitted.
type Store interface {
	// Admit checks every limit of client and, if all allow it, takes one
	// request, one stream slot and reserve tokens. A refused request takes
	// nothing. The returned Lease is nil unless the decision allows.
	Admit(ctx context.Context, client string, l Limits, reserve int) (Decision, Lease, error)
	// Close stops background work; leases still held are left to expire.
	Close() error
}

func (l Limits) burst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return max(1, l.RequestsPerMinute/6)
}

// MaxTokens bounds every token count a store takes in (reservations,
// usage): sums of client-supplied numbers saturate instead of wrapping
// round, and no bucket can be driven further into debt than a request of
// this size would.
const MaxTokens = 1 << 40

// clampTokens brings n into [0, MaxTokens].
func clampTokens(n int) int { return min(max(n, 0), MaxTokens) }

// maxWait bounds any wait a store reports.
const maxWait = 24 * time.Hour

// seconds converts a wait in seconds to a Duration within [0, maxWait]:
// a float too large for a Duration would wrap round to a negative one.
func seconds(s float64) time.Duration {
	if !(s > 0) {
		return 0
	}
	if s >= maxWait.Seconds() {
		return maxWait
	}
	return time.Duration(s * float64(time.Second))
}
