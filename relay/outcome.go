package relay

import (
	"context"
	"errors"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/outcome"
)

// Outcome is how a stream ended, decided once (Conclude) and read by
// everything downstream: the terminal frame, settling limits, metrics and
// the access log.
type Outcome struct {
	End outcome.End
	Result
	// Err is what the client is told, for every End but Done.
	Err *failure.Error
	// Cause is the underlying error's text (redacted), for logs.
	Cause string
}

// Conclude derives the outcome from how a stream stopped: err nil means
// the answer was complete. redact makes text safe to show and log.
func Conclude(ctx context.Context, res Result, err error, redact func(string) string) Outcome {
	var o Outcome
	o.conclude(ctx, &res, err, redact)
	return o
}

func (o *Outcome) conclude(ctx context.Context, res *Result, err error, redact func(string) string) {
	*o = Outcome{Result: *res}
	if err == nil {
		o.End = outcome.Done
		return
	}
	e := failure.Classify(ctx, err)
	if m := redact(e.Message); m != e.Message {
		e.Message = m
	}
	o.Err, o.Cause = e, redact(err.Error())
	var cg ClientGone
	if errors.As(err, &cg) {
		o.Err = failure.ClientClosed()
	}
	switch o.Err.Code {
	case failure.CodeClientClosed:
		o.End = outcome.ClientGone
	case failure.CodeShutdown:
		o.End = outcome.Shutdown
	case failure.CodeCancelled:
		o.End = outcome.Cancelled
	default:
		o.End = outcome.UpstreamError
	}
}

// Tell reports whether anyone is there to be told how the stream ended:
// not when the client left.
func (o *Outcome) Tell() bool { return o.End != outcome.ClientGone }

// Terminal appends the stream's one terminal frame in f: done after a
// complete answer, an error otherwise.
func (o *Outcome) Terminal(buf []byte, f Format) []byte {
	if o.End == outcome.Done {
		return f.Done(buf, &o.Result)
	}
	return f.Failed(buf, o.Err)
}

// Relay writes an open stream to out, the client's connection, from the
// opening frame to exactly one terminal frame (none when the client
// left: there is no one to tell), and returns the outcome.
func Relay(ctx context.Context, out *SSE, p *Pump, provider string, redact func(string) string) *Outcome {
	err := sendOpening(out, p.Format, provider)
	res := &p.t.res     // nothing yet, should the opening frame fail
	var pending *[]byte // the frames Run left unflushed, if any
	if err == nil {
		pending, res, err = p.Run(out.Write)
	} else {
		err = ClientGone{err}
	}
	// Made at the end, on the heap: in the pump it cost every open stream
	// 136 bytes (a resumable stream's producer too, which has its own),
	// and in this frame every stream's stack as much (see Pump).
	o := new(Outcome)
	o.conclude(ctx, res, err, redact)
	if o.Tell() {
		if pending == nil {
			pending = Buffer()
		}
		*pending = o.Terminal(*pending, p.Format)
		_ = out.Write(*pending)
	}
	if pending != nil {
		Release(pending)
	}
	return o
}

// sendOpening writes f's opening frame from a pooled buffer given back at
// once: not held while the stream waits (see bufPool), and a large
// opening (a Responses object echoing an agent's instructions) not
// pooled at all.
func sendOpening(out *SSE, f Format, provider string) error {
	bp := Buffer()
	*bp = f.Opened((*bp)[:0], provider)
	err := out.Write(*bp)
	Release(bp)
	return err
}
