// Package relay is the streaming engine's pump: it pulls chunks from an
// upstream stream, has a dialect's Format render them, and hands complete
// frames to a writer, flushing whenever the upstream is about to wait. It
// derives once what the stream said about itself (finish reason, usage,
// truncation) and how it ended (Outcome), for every dialect alike.
package relay

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/spend"
)

// Format renders one stream in a dialect's wire protocol. Each method
// appends complete frames to buf and returns it; the relay writes what
// they return in one piece. A method may append nothing.
type Format interface {
	// Opened starts the stream; provider is the one that answered.
	Opened(buf []byte, provider string) []byte
	Chunk(buf []byte, c *providers.Chunk) []byte
	Done(buf []byte, r *Result) []byte
	Failed(buf []byte, e *failure.Error) []byte
}

// Result is what a stream said about itself.
type Result struct {
	FinishReason   string
	Usage          providers.Usage
	UsageEstimated bool
	TTFT           time.Duration
	Duration       time.Duration
	// Cost is what Usage cost in dollars, when Priced: the deployment
	// that answered has a price.
	Cost   float64
	Priced bool
}

// price sets res's cost at the price of the deployment that answered st,
// if it has one.
func price(st providers.Stream, res *Result) {
	if p, ok := st.(spend.Pricer); ok {
		if pr := p.Price(); pr != nil {
			res.Cost, res.Priced = pr.Cost(&res.Usage), true
		}
	}
}

// IdleStream is a stream that reports when it is about to wait.
type IdleStream interface {
	providers.Stream
	providers.IdleNotifier
}

// Observer is told of a stream's deltas as they pass (metrics). Its
// methods run on the per-token path: they must not allocate.
type Observer interface {
	// FirstDelta is called before the first Delta, with the time to it:
	// thinking counts, as it is what a client sees first.
	FirstDelta(ttft time.Duration)
	// FirstContent is called once, with the time to the first answer
	// text or tool call (later than FirstDelta when the model thinks).
	FirstContent(d time.Duration)
	Delta(now time.Time)
}

// Pump describes one stream to relay.
type Pump struct {
	Stream IdleStream
	Format Format
	// Request is what was asked, to count its tokens should the upstream
	// report no usage.
	Request *providers.Request
	// Start is when the request arrived: TTFT and duration count from it.
	Start    time.Time
	Observer Observer // optional

	// The stream's state while Run reads it lives here, not in Run's
	// frame: an idle stream's handler waits under that frame for the
	// whole stream, and kept small its stack stays at 8 KiB (issue 18).
	t tally
	c providers.Chunk
	// frames holds the frames rendered and not yet flushed, in a pooled
	// buffer, while there are any (see bufPool).
	frames *[]byte
}

// maxPending caps what a relay holds while the upstream keeps sending
// without pause: past it, frames are written even before the stream says
// it is idle.
const maxPending = 16 << 10

// bufPool holds frame buffers, so that relaying a token allocates
// nothing. A stream holds one only while it has frames to send: it gives
// it back once they are written and it is about to wait for the upstream,
// so that an open stream waiting for its next token holds none (issue 18:
// memory per open stream; 10,000 idle streams held 5 MiB of them, and as
// much again of collector headroom).
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, bufSize); return &b }}

// bufSize is the room a new frame buffer starts with: a few frames.
const bufSize = 512

// maxPooled is the largest buffer given back to the pool. A larger one
// (the opening of a Responses stream echoing an agent's instructions and
// tools, tens of KiB) goes to the collector instead of to the next stream,
// which needs a few hundred bytes.
const maxPooled = maxPending + 4<<10

// Buffer returns a frame buffer from the pool; give it back with Release.
func Buffer() *[]byte { return bufPool.Get().(*[]byte) }

// Release returns a buffer to the pool, keeping its storage unless it
// grew past maxPooled.
func Release(b *[]byte) {
	if cap(*b) > maxPooled {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// ClientGone marks a failure to write to the client.
type ClientGone struct{ Err error }

func (e ClientGone) Error() string { return "write to client: " + e.Err.Error() }

func (e ClientGone) Unwrap() error { return e.Err }

// Run reads the stream to its end, rendering each chunk into a pooled
// buffer and handing the frames to flush whenever the stream is about to
// wait (frames that arrived together go out together, as a byte-copying
// proxy's would; the buffer goes back to the pool until the next chunk)
// or maxPending bytes are held. It returns the frames not yet flushed, in
// a pooled buffer for the caller to append the terminal frame to and
// Release (nil when there are none), what the stream said (held by the
// pump), and why it stopped: nil when the upstream finished, ClientGone
// when flush failed, otherwise the upstream's error.
func (p *Pump) Run(flush func([]byte) error) (*[]byte, *Result, error) {
	var (
		t   = &p.t
		c   = &p.c
		err error
		// ferr is a flush failure inside the idle callback.
		ferr error
		// sawContent is set at the first answer text or tool call.
		sawContent bool
		// now is when the latest delta arrived; waited says the stream
		// has waited for the network since. Deltas that arrived in one
		// read share its time: reading the clock for each was 3% of the
		// CPU with tokens back to back, and their gaps are zero anyway
		// at the metrics' resolution.
		now    time.Time
		waited = true
	)
	// A stream that cannot tell when it waits is wrapped by the upstream
	// package's stream, which then flushes before every Recv.
	p.Stream.NotifyIdle(func() {
		waited = true
		if p.frames == nil {
			return
		}
		if len(*p.frames) > 0 && ferr == nil {
			ferr = flush(*p.frames)
		}
		Release(p.frames)
		p.frames = nil
	})
	for err == nil {
		*c, err = p.Stream.Recv()
		if ferr != nil {
			err = ClientGone{ferr}
			break
		}
		if err != nil {
			break
		}
		delta, aerr := t.add(c)
		if aerr != nil {
			err = aerr
			break
		}
		if delta {
			if waited {
				now, waited = time.Now(), false
			}
			if t.deltas == 1 {
				t.res.TTFT = now.Sub(p.Start)
				if p.Observer != nil {
					p.Observer.FirstDelta(t.res.TTFT)
				}
			}
			if !sawContent && (c.Content != "" || len(c.ToolCalls) > 0) {
				sawContent = true
				if p.Observer != nil {
					p.Observer.FirstContent(now.Sub(p.Start))
				}
			}
			if p.Observer != nil {
				p.Observer.Delta(now)
			}
		}
		if p.frames == nil {
			p.frames = Buffer()
		}
		buf := p.Format.Chunk(*p.frames, c)
		if len(buf) >= maxPending {
			if ferr := flush(buf); ferr != nil {
				err = ClientGone{ferr}
			}
			buf = buf[:0]
		}
		*p.frames = buf
	}
	err = t.end(err, p.Request)
	t.res.Duration = time.Since(p.Start)
	price(p.Stream, &t.res)
	bp := p.frames
	p.frames = nil
	return bp, &t.res, err
}

// tally derives what a stream says about itself as its chunks pass: the
// one place that decides finish reason, usage and truncation, for the
// streaming and the whole-answer paths alike.
type tally struct {
	res      Result
	deltas   int
	hasUsage bool
	// answer keeps the text relayed (up to maxKept), to count its tokens
	// should the upstream report no usage; bytes is the whole length.
	answer []byte
	bytes  int
}

// MaxToolCalls bounds the tool calls of one answer: an upstream's index
// outside [0, MaxToolCalls) makes the stream malformed, rather than a
// panic or a giant allocation.
const MaxToolCalls = 128

// maxKept bounds the answer text a stream keeps for counting its tokens,
// should the upstream report no usage; past it the tokenizer estimates
// anyway (internal/tokens), so the rest is only measured.
const maxKept = 256 << 10

// answerStart is the room the answer's text starts with: some 50 tokens.
const answerStart = 256

// add takes in a chunk; it reports whether the chunk is a delta (carries
// content or a tool call), and fails on a chunk that cannot be part of a
// valid answer.
func (t *tally) add(c *providers.Chunk) (bool, error) {
	delta := c.Delta()
	if delta {
		for i := range c.ToolCalls {
			if idx := c.ToolCalls[i].Index; idx < 0 || idx >= MaxToolCalls {
				return false, fmt.Errorf("%w: tool call index %d is outside 0..%d", providers.ErrMalformed, idx, MaxToolCalls-1)
			}
		}
		t.deltas++
		// Thinking is billed as output too: count it with the answer.
		if t.answer == nil && len(c.Reasoning)+len(c.Content) > 0 {
			// Deltas are a few bytes each: grown from nothing, the text
			// of a 64-token answer took seven arrays (8, 16, ... 512
			// bytes), 6% of the bytes a chat stream allocated.
			t.answer = make([]byte, 0, answerStart)
		}
		for _, text := range [2]string{c.Reasoning, c.Content} {
			if room := maxKept - len(t.answer); room > 0 {
				t.answer = append(t.answer, text[:min(room, len(text))]...)
			}
			t.bytes += len(text)
		}
	}
	if c.FinishReason != "" {
		t.res.FinishReason = c.FinishReason
	}
	if c.Usage != nil {
		t.res.Usage, t.hasUsage = *c.Usage, true
	}
	return delta, nil
}

// end turns the error a stream stopped with into the stream's result: a
// stream that closed without a finish reason was cut short, whatever the
// provider said, so a truncated answer is never reported as complete.
// Usage is known however the stream ended (counted when the upstream did
// not report it), so that what was generated is billed and settled.
func (t *tally) end(err error, req *providers.Request) error {
	if !t.hasUsage {
		t.res.Usage, t.res.UsageEstimated = CountUsage(req, t.answer, t.bytes-len(t.answer), t.deltas), true
	}
	switch {
	case errors.Is(err, io.EOF) && t.res.FinishReason != "":
		return nil
	case errors.Is(err, io.EOF):
		return providers.ErrTruncated
	}
	return err
}
