// Package bench measures what the gateway adds between a client and a
// model: a load generator that speaks both the native and OpenAI stream
// formats, a sampler of server CPU time and memory from /proc, and a runner
// that compares the gateway with a bare reverse proxy and with the upstream
// itself, writing Markdown, JSON and an SVG chart.
package bench

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// hist is a log-linear histogram of durations with about 3% precision,
// cheap enough to record every chunk gap of a long run without storing
// samples. It is not safe for concurrent use: each worker keeps its own and
// they are merged at the end.
type hist struct {
	counts   [64*32 + 64]int64
	n        int64
	min, max time.Duration
	sum      time.Duration
}

const subBits = 5 // 32 sub-buckets per power of two

func bucketOf(v int64) int {
	if v < 64 {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // v>>e is in [32, 64)
	return 64 + (e-1)*32 + int(v>>e) - 32
}

// lowerBound is the smallest value of bucket i.
func lowerBound(i int) int64 {
	if i < 64 {
		return int64(i)
	}
	e := (i-64)/32 + 1
	return int64((i-64)%32+32) << e
}

func (h *hist) add(d time.Duration) {
	h.counts[bucketOf(int64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value below which a fraction q of samples fall,
// as the middle of its bucket (exact for the extremes).
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank && c > 0 {
			lo, hi := lowerBound(i), lowerBound(i+1)
			v := time.Duration((lo + hi) / 2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// Summary is the distribution of one measure, in microseconds.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	Max   float64 `json:"max_us"`
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func (h *hist) summary() Summary {
	s := Summary{Count: h.n}
	if h.n == 0 {
		return s
	}
	s.Mean = us(h.sum) / float64(h.n)
	s.P50, s.P90, s.P99, s.Max = us(h.quantile(.5)), us(h.quantile(.9)), us(h.quantile(.99)), us(h.max)
	return s
}

// exact keeps every sample, for measures taken once per stream (time to
// first token, stream duration): there are few enough of them, and the
// histogram's 3% buckets are too coarse for what they are compared on (a
// 5 s stream's median in buckets 160 ms wide could not tell the
// gateway's added duration from the proxy's).
type exact []time.Duration

func (e *exact) add(d time.Duration) { *e = append(*e, d) }

func (e *exact) merge(o *exact) { *e = append(*e, *o...) }

// summary sorts the samples and reports them as hist.summary does, with
// the rank-th smallest sample (rank = ⌈q·n⌉) as quantile q.
func (e *exact) summary() Summary {
	s := Summary{Count: int64(len(*e))}
	if len(*e) == 0 {
		return s
	}
	slices.Sort(*e)
	var sum time.Duration
	for _, d := range *e {
		sum += d
	}
	q := func(q float64) float64 { return us((*e)[int(math.Ceil(q*float64(len(*e))))-1]) }
	s.Mean = us(sum) / float64(len(*e))
	s.P50, s.P90, s.P99, s.Max = q(.5), q(.9), q(.99), us((*e)[len(*e)-1])
	return s
}
