package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/streamgate/gateway/internal/tokens"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
)

// bufPool holds frame buffers: a relay appends every frame into one buffer
// that it reuses, so that relaying a token allocates nothing in the gateway.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPending caps what a relay holds while the upstream keeps sending
// without pause: past it, frames are written even before the stream says
// it is idle.
const maxPending = 16 << 10

// idleStream is a stream that reports when it is about to wait.
type idleStream interface {
	providers.Stream
	providers.IdleNotifier
}

// relay copies an open upstream stream straight to the client as SSE in
// format f, ending it with exactly one terminal frame: done when the
// upstream finished, error when it broke or the server is shutting down,
// nothing when the client left (there is no one to tell). It records the
// outcome in info. (Native streams go through a producer and a log
// instead, so that they can be resumed.)
func (s *Server) relay(ctx context.Context, w http.ResponseWriter, st idleStream, f streamFormat, req *providers.Request, info *middleware.Info, start time.Time) {
	out := startSSE(w, s.cfg.Server.HeartbeatInterval.Std(), s.cfg.Server.WriteTimeout.Std())
	defer out.stop()
	bp := bufPool.Get().(*[]byte)
	defer func() { bufPool.Put(bp) }()
	buf := f.opened((*bp)[:0], info.Provider)
	var res result
	err := out.write(buf)
	if err == nil {
		buf, res, err = pump(st, f, req, info, start, buf[:0], out.write, &streamObs{m: s.metrics})
	} else {
		err = clientGone{err}
	}
	buf, tell := s.ending(ctx, buf, f, &res, err, info)
	if tell {
		_ = out.write(buf)
	}
	*bp = buf
}

// pump reads st to its end, rendering each chunk with f into buf and
// handing the frames to flush whenever the stream is about to wait (frames
// that arrived together go out together, as a byte-copying proxy's would)
// or maxPending bytes are held. It returns buf with the frames not yet
// flushed (the terminal frame is appended to them), what it learnt, and why
// it stopped: nil when the upstream finished, clientGone when flush
// failed, otherwise the upstream's error. obs, if set, is told of each
// chunk carrying content.
func pump(st idleStream, f streamFormat, req *providers.Request, info *middleware.Info, start time.Time, buf []byte, flush func([]byte) error, obs *streamObs) ([]byte, result, error) {
	var (
		res      result
		deltas   int
		hasUsage bool
		// answer keeps the text relayed, to count its tokens should the
		// upstream report no usage.
		answer []byte
		// c lives across iterations: its address goes to the format, so
		// it escapes, and declared in the loop it would cost an
		// allocation per token.
		c   providers.Chunk
		err error
		// ferr is a flush failure inside the idle callback.
		ferr error
	)
	// A stream that cannot tell when it waits is wrapped by
	// resilientStream, which then flushes before every Recv.
	st.NotifyIdle(func() {
		if len(buf) > 0 && ferr == nil {
			ferr = flush(buf)
			buf = buf[:0]
		}
	})
	for err == nil {
		c, err = st.Recv()
		if ferr != nil {
			err = clientGone{ferr}
			break
		}
		if err != nil {
			break
		}
		if c.Content != "" || len(c.ToolCalls) > 0 {
			now := time.Now()
			if deltas == 0 {
				res.ttft = now.Sub(start)
				info.TTFT = res.ttft
			}
			deltas++
			answer = append(answer, c.Content...)
			if obs != nil {
				obs.delta(info, now)
			}
		}
		if c.FinishReason != "" {
			res.finishReason = c.FinishReason
		}
		if c.Usage != nil {
			res.usage, hasUsage = *c.Usage, true
		}
		buf = f.chunk(buf, &c)
		if len(buf) >= maxPending {
			if ferr := flush(buf); ferr != nil {
				err = clientGone{ferr}
			}
			buf = buf[:0]
		}
	}
	switch {
	case errors.Is(err, io.EOF) && res.finishReason != "":
		if !hasUsage {
			res.usage, res.usageEstimated = countUsage(req, answer, deltas), true
		}
		res.duration = time.Since(start)
		return buf, res, nil
	case errors.Is(err, io.EOF):
		// A stream without a finish reason was cut short, whatever the
		// provider said: never report a truncated answer as done.
		return buf, res, providers.ErrTruncated
	}
	return buf, res, err
}

// ending appends to buf the terminal frame for how pump stopped (err nil:
// done) and records the outcome in info. tell is false when there is no
// one to tell on this connection: the client left.
func (s *Server) ending(ctx context.Context, buf []byte, f streamFormat, res *result, err error, info *middleware.Info) (_ []byte, tell bool) {
	if err == nil {
		info.PromptTokens, info.CompletionTokens = res.usage.PromptTokens, res.usage.CompletionTokens
		info.End = "done"
		return f.done(buf, res), true
	}
	e := s.clientError(ctx, err)
	info.ErrorCode, info.Error = e.Code, s.redact.Replace(err.Error())
	var cg clientGone
	if errors.As(err, &cg) {
		e = errClientClosed
		info.ErrorCode = e.Code
	}
	switch e.Code {
	case "client_closed_request":
		info.End = "client_gone"
		return f.failed(buf, e), false
	case "server_shutdown":
		info.End = "shutdown"
	case codeCancelled:
		info.End = "cancelled"
		if errors.Is(context.Cause(ctx), errAbandoned) {
			info.End = "client_gone" // and nobody came back
		}
	default:
		info.End = "upstream_error"
	}
	return f.failed(buf, e), true
}

// clientGone marks a failure to write to the client.
type clientGone struct{ err error }

func (e clientGone) Error() string { return "write to client: " + e.err.Error() }

// approxPromptTokens is a cheap guess at a prompt's size (four characters
// a token), for reserving tokens at admission.
func approxPromptTokens(req *providers.Request) int {
	chars := 0
	for i := range req.Messages {
		chars += len(req.Messages[i].Text())
	}
	return max(1, chars/4)
}

// countUsage stands in when an upstream reports no usage: the prompt and
// the answer counted with the o200k_base tokenizer (or, should it fail to
// load, the rough guess: four characters a prompt token, a token a delta).
func countUsage(req *providers.Request, answer []byte, deltas int) providers.Usage {
	u := providers.Usage{PromptTokens: approxPromptTokens(req), CompletionTokens: deltas}
	if p, err := tokens.Prompt(req.Messages); err == nil {
		u.PromptTokens = p
	}
	if c, err := tokens.Count(string(answer)); err == nil {
		u.CompletionTokens = c
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// collect reads a whole stream into one answer, for stream=false.
func collect(st providers.Stream) (content string, calls []providers.ToolCall, res result, deltas int, err error) {
	var text []byte
	hasUsage := false
	for {
		c, rerr := st.Recv()
		if errors.Is(rerr, io.EOF) {
			if res.finishReason == "" {
				return "", nil, res, deltas, providers.ErrTruncated
			}
			res.usageEstimated = !hasUsage
			return string(text), calls, res, deltas, nil
		}
		if rerr != nil {
			return "", nil, res, deltas, rerr
		}
		if c.Content != "" || len(c.ToolCalls) > 0 {
			deltas++
		}
		text = append(text, c.Content...)
		for _, d := range c.ToolCalls {
			for len(calls) <= d.Index {
				calls = append(calls, providers.ToolCall{Type: "function"})
			}
			tc := &calls[d.Index]
			if d.ID != "" {
				tc.ID = d.ID
			}
			if d.Type != "" {
				tc.Type = d.Type
			}
			tc.Function.Name += d.Name
			tc.Function.Arguments += d.Arguments
		}
		if c.FinishReason != "" {
			res.finishReason = c.FinishReason
		}
		if c.Usage != nil {
			res.usage, hasUsage = *c.Usage, true
		}
	}
}
