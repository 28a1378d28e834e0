package relay

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/providers"
)

// TestTallyKeepsBoundedText: a stream once kept its whole answer in
// memory to count it (52 MB for a 52 MB answer). It keeps maxKept bytes
// and measures the rest; usage still covers all of it.
func TestTallyKeepsBoundedText(t *testing.T) {
	var tl tally
	word := strings.Repeat("word ", 200) // 1000 bytes
	for range 4000 {                     // 4 MB
		if _, err := tl.add(&providers.Chunk{Content: word}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tl.add(&providers.Chunk{FinishReason: "stop"}); err != nil {
		t.Fatal(err)
	}
	if len(tl.answer) > maxKept || cap(tl.answer) > 2*maxKept {
		t.Errorf("kept %d bytes (capacity %d), bound %d", len(tl.answer), cap(tl.answer), maxKept)
	}
	err := tl.end(io.EOF, &providers.Request{Messages: []providers.Message{{Role: "user", Content: "hi"}}})
	res := tl.res
	if err != nil || !res.UsageEstimated || res.Usage.CompletionTokens < 700000 {
		t.Errorf("usage %+v (estimated %v), %v: want about 800000 completion tokens", res.Usage, res.UsageEstimated, err)
	}
}

// TestTallyRefusesBadToolIndexes: an index outside 0..MaxToolCalls-1 is a
// malformed stream.
func TestTallyRefusesBadToolIndexes(t *testing.T) {
	for _, idx := range []int{-1, MaxToolCalls, 3000000} {
		var tl tally
		_, err := tl.add(&providers.Chunk{ToolCalls: []providers.ToolCallDelta{{Index: idx, Name: "f"}}})
		if !errors.Is(err, providers.ErrMalformed) {
			t.Errorf("index %d: %v", idx, err)
		}
	}
}

// burstStream sends its chunks in bursts: it reports a wait after each
// burst, as a stream reading from the network does before a read that
// blocks, and none between the chunks of one.
type burstStream struct {
	bursts [][]providers.Chunk
	onIdle func()
	// waiting, if set, is called during each wait.
	waiting func()
}

func (s *burstStream) NotifyIdle(fn func()) { s.onIdle = fn }
func (s *burstStream) Close() error         { return nil }
func (s *burstStream) Recv() (providers.Chunk, error) {
	for len(s.bursts) > 0 && len(s.bursts[0]) == 0 {
		s.bursts = s.bursts[1:]
		s.onIdle()
		if s.waiting != nil {
			s.waiting()
		}
		// The wait itself: the clock moves on.
		for t0 := time.Now(); !time.Now().After(t0); {
		}
	}
	if len(s.bursts) == 0 {
		return providers.Chunk{}, io.EOF
	}
	c := s.bursts[0][0]
	s.bursts[0] = s.bursts[0][1:]
	return c, nil
}

// timesObserver keeps the time of every delta.
type timesObserver struct{ at []time.Time }

func (o *timesObserver) FirstDelta(time.Duration)   {}
func (o *timesObserver) FirstContent(time.Duration) {}
func (o *timesObserver) Delta(now time.Time)        { o.at = append(o.at, now) }

type nopFormat struct{}

func (nopFormat) Opened(buf []byte, _ string) []byte          { return buf }
func (nopFormat) Chunk(buf []byte, _ *providers.Chunk) []byte { return append(buf, 'x') }
func (nopFormat) Done(buf []byte, _ *Result) []byte           { return buf }
func (nopFormat) Failed(buf []byte, _ *failure.Error) []byte  { return buf }

// TestDeltasOfOneReadShareItsTime: the clock is read once per wait, not
// once per delta; a delta after a wait gets a time of its own.
func TestDeltasOfOneReadShareItsTime(t *testing.T) {
	tok := providers.Chunk{Content: "t"}
	st := &burstStream{bursts: [][]providers.Chunk{{tok, tok, tok}, {tok, tok, {FinishReason: "stop", Usage: &providers.Usage{PromptTokens: 1, CompletionTokens: 5, TotalTokens: 6}}}}}
	obs := &timesObserver{}
	p := Pump{Stream: st, Format: nopFormat{}, Request: &providers.Request{}, Start: time.Now(), Observer: obs}
	var flushes int
	if _, _, err := p.Run(func([]byte) error { flushes++; return nil }); err != nil {
		t.Fatal(err)
	}
	a := obs.at
	if len(a) != 5 || !a[0].Equal(a[1]) || !a[1].Equal(a[2]) || !a[3].Equal(a[4]) || !a[3].After(a[2]) {
		t.Errorf("delta times %v: want the first three equal, the last two equal and later", a)
	}
	if flushes != 2 { // each burst, at the wait after it
		t.Errorf("%d flushes, want 2", flushes)
	}
}

// capsWriter records the capacity of the buffer behind each write.
type capsWriter struct {
	*httptest.ResponseRecorder
	caps []int
}

func (w *capsWriter) Write(b []byte) (int, error) {
	w.caps = append(w.caps, cap(b))
	return w.ResponseRecorder.Write(b)
}

// bigOpening opens with a frame of 40 KiB, as a Responses stream whose
// request carried long instructions does.
type bigOpening struct{ nopFormat }

func (bigOpening) Opened(buf []byte, _ string) []byte {
	return append(buf, strings.Repeat("o", 40<<10)...)
}

// TestPumpHoldsNoBufferWhileWaiting: a stream waiting for its upstream
// holds no frame buffer (10,000 idle streams held one each); the frames
// of each burst still go out together, at the wait after it.
func TestPumpHoldsNoBufferWhileWaiting(t *testing.T) {
	tok := providers.Chunk{Content: "t"}
	st := &burstStream{bursts: [][]providers.Chunk{{}, {tok, tok}, {tok}, {}, {tok, {FinishReason: "stop"}}}}
	p := &Pump{Stream: st, Format: textFormat{}, Request: &providers.Request{}, Start: time.Now()}
	var waits int
	st.waiting = func() {
		waits++
		if p.frames != nil {
			t.Errorf("wait %d: holding a buffer of %d bytes", waits, cap(*p.frames))
		}
	}
	var flushed []string
	bp, _, err := p.Run(func(b []byte) error { flushed = append(flushed, string(b)); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if bp != nil {
		t.Errorf("left %q unflushed, want nothing (the end came after a wait)", *bp)
	}
	if waits != 5 || strings.Join(flushed, "|") != "tt|t|tf" {
		t.Errorf("%d waits, flushed %q: want 5 waits and each burst flushed once", waits, flushed)
	}
}

// textFormat renders a delta as "t" and the finish as "f".
type textFormat struct{ nopFormat }

func (textFormat) Chunk(buf []byte, c *providers.Chunk) []byte {
	if c.FinishReason != "" {
		return append(buf, 'f')
	}
	return append(buf, c.Content...)
}

// TestRelayLetsGoOfALargeOpening: the frames after an opening larger
// than maxPooled go out from a buffer of the pool's size, not from the
// one the opening grew, which the pool does not keep either.
func TestRelayLetsGoOfALargeOpening(t *testing.T) {
	tok := providers.Chunk{Content: "t"}
	for _, tc := range []struct {
		name   string
		format Format
		large  bool
	}{
		{"small opening", nopFormat{}, false},
		{"large opening", bigOpening{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &burstStream{bursts: [][]providers.Chunk{{tok}, {tok, {FinishReason: "stop"}}}}
			p := &Pump{Stream: st, Format: tc.format, Request: &providers.Request{}, Start: time.Now()}
			w := &capsWriter{ResponseRecorder: httptest.NewRecorder()}
			out := StartSSE(w, 0, 0)
			defer out.Stop()
			if o := Relay(context.Background(), out, p, "up", func(s string) string { return s }); o.End != outcome.Done {
				t.Fatalf("ended %v", o.End)
			}
			if len(w.caps) < 3 {
				t.Fatalf("%d writes, want the opening and the frames after it", len(w.caps))
			}
			if tc.large && w.caps[0] < 40<<10 {
				t.Fatalf("opening written from %d bytes", w.caps[0])
			}
			for i, c := range w.caps[1:] {
				if c > maxPooled {
					t.Errorf("frame %d written from a buffer of %d bytes, want at most %d", i+1, c, maxPooled)
				}
			}
		})
	}
}
