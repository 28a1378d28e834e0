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

// openingKept is the largest buffer a stream goes on with after its
// opening frame. A larger opening is a Responses response object,
// written twice (response.created, response.in_progress), that echoes
// the request's instructions and tools: tens of KiB from an agent such
// as Codex, which every such stream held to its end.
const openingKept = 4 << 10

// Relay writes an open stream to out, the client's connection, from the
// opening frame to exactly one terminal frame (none when the client
// left: there is no one to tell), and returns the outcome, held by the
// pump (like its result: the frames under the relay stay small).
func Relay(ctx context.Context, out *SSE, p *Pump, provider string, redact func(string) string) *Outcome {
	bp := Buffer()
	defer Release(bp)
	buf := p.Format.Opened((*bp)[:0], provider)
	res := &p.t.res // nothing yet, should the opening frame fail
	err := out.Write(buf)
	if cap(buf) > openingKept {
		// Not held for the stream's life, nor given back to the pool for
		// others to hold: the frames after it need no more than a pooled
		// buffer's size.
		buf = make([]byte, 0, bufSize)
	}
	if err == nil {
		buf, res, err = p.Run(buf[:0], out.Write)
	} else {
		err = ClientGone{err}
	}
	o := &p.o
	o.conclude(ctx, res, err, redact)
	if o.Tell() {
		buf = o.Terminal(buf, p.Format)
		_ = out.Write(buf)
	}
	*bp = buf
	return o
}
