package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistQuantilesWithinPrecision(t *testing.T) {
	var h hist
	var samples []time.Duration
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		d := time.Duration(r.ExpFloat64() * float64(300*time.Microsecond))
		samples = append(samples, d)
		h.add(d)
	}
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := samples[int(q*float64(len(samples)))-1]
		got := h.quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.04 || diff < -0.04 {
			t.Errorf("q%.2f = %v, exact %v (%.1f%% off)", q, got, exact, diff*100)
		}
	}
	if h.quantile(1) != samples[len(samples)-1] {
		t.Errorf("max = %v", h.quantile(1))
	}
	for i := 0; i < bucketOf(1<<62); i++ {
		if lowerBound(i) >= lowerBound(i+1) || bucketOf(lowerBound(i)) != i {
			t.Fatalf("bucket %d: bounds %d..%d, bucketOf(lower) = %d", i, lowerBound(i), lowerBound(i+1), bucketOf(lowerBound(i)))
		}
	}
}

// TestExactQuantiles: per-stream measures report the ⌈q·n⌉-th smallest
// sample, whatever order the workers recorded them in.
func TestExactQuantiles(t *testing.T) {
	var a, b exact
	for i := 100; i >= 1; i-- {
		if i%2 == 0 {
			a.add(time.Duration(i) * time.Millisecond)
		} else {
			b.add(time.Duration(i) * time.Millisecond)
		}
	}
	a.merge(&b)
	got := a.summary()
	want := Summary{Count: 100, Mean: 50500, P50: 50000, P90: 90000, P99: 99000, Max: 100000}
	if got != want {
		t.Errorf("summary %+v, want %+v", got, want)
	}
	var none exact
	if s := none.summary(); s != (Summary{}) {
		t.Errorf("empty: %+v", s)
	}
}
