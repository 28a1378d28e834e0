package resumable

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/relay"
)

// Ref is a stream found for a request: in this replica's memory, or (log
// nil) only in Redis.
type Ref struct {
	ID    string
	log   *eventlog.Log
	State eventlog.State
}

// Lookup finds stream id, here or in Redis (eventlog.ErrNotFound when
// neither has it).
func (h *Hub) Lookup(ctx context.Context, id string) (Ref, error) {
	if l, err := h.mem.Get(id); err == nil {
		last, finished := l.Last()
		return Ref{ID: id, log: l, State: eventlog.State{Meta: l.Meta, Last: last, Finished: finished}}, nil
	}
	if h.rds == nil {
		return Ref{}, eventlog.ErrNotFound
	}
	st, err := h.rds.Stat(ctx, id)
	return Ref{ID: id, State: st}, err
}

// Cancel stops the generation of ref (its upstream request is cancelled)
// and readers get f's error event with code cancelled. It reports whether
// the stream was still running.
func (h *Hub) Cancel(ctx context.Context, ref Ref, f Lines) (bool, error) {
	cancelled := false
	if p := h.producer(ref.ID); p != nil {
		cancelled = p.stop(ErrCancelled)
	} else if ref.log == nil && !ref.State.Finished {
		// Produced on another replica: end it in Redis. Its producer
		// learns at its next append or lease renewal, and cancels its
		// upstream.
		var err error
		cancelled, err = h.rds.Finish(ctx, ref.ID, 0, f.Failed(nil, failure.Of(ErrCancelled)), false)
		if err != nil {
			return false, err
		}
	}
	if cancelled {
		h.obs.Cancelled("delete")
	}
	return cancelled, nil
}

// RetryFrame is the retry: line an events URL starts with.
func (h *Hub) RetryFrame() []byte { return h.retryFrame }

// eventSource is where a reader gets a stream's events.
type eventSource interface {
	// next returns the events after id after, waiting for some; none
	// (and no error) when the stream has ended and none will come.
	next(ctx context.Context, after int64) (eventlog.Events, error)
	close()
}

// ErrTooManyReaders refuses a reader of a stream that has
// streams.max_readers attached already.
var ErrTooManyReaders = failure.Define(http.StatusTooManyRequests, failure.TypeRateLimit, "too_many_stream_readers",
	"the stream has as many readers attached as streams.max_readers allows; retry when one has left")

// Reader is a reader attached to a stream: Follow it, then Close it.
type Reader struct {
	src eventSource
	ref Ref
}

// Close detaches the reader.
func (r *Reader) Close() { r.src.close() }

// Attach attaches a reader to ref, framed for f, unless the stream has
// streams.max_readers attached already (ErrTooManyReaders). Readers on
// other replicas are counted as Redis last saw them.
func (h *Hub) Attach(ctx context.Context, ref Ref, f Lines) (*Reader, error) {
	max := h.cfg.MaxReaders
	if ref.log != nil {
		r, ok := ref.log.TryAttach(0, max)
		if !ok {
			return nil, ErrTooManyReaders
		}
		h.obs.Resumed("memory")
		return &Reader{src: &memSource{r: r}, ref: ref}, nil
	}
	if n, err := h.rds.Readers(ctx, ref.ID); err != nil {
		return nil, err
	} else if max > 0 && n >= max {
		return nil, ErrTooManyReaders
	}
	h.obs.Resumed("redis")
	return &Reader{src: &redisSource{h: h, id: ref.ID, reader: NewID(), lost: f.Failed(nil, failure.Of(ErrProducerLost))}, ref: ref}, nil
}

// memSource reads a log in this replica's memory.
type memSource struct{ r *eventlog.Reader }

func (m *memSource) next(ctx context.Context, after int64) (eventlog.Events, error) {
	for {
		ev, finished, wait, err := m.r.Read(after)
		if err != nil || finished || !ev.Empty() {
			return ev, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ev, ctx.Err()
		}
	}
}

func (m *memSource) close() { m.r.Detach() }

// redisSource follows a stream produced on another replica, through Redis.
type redisSource struct {
	h      *Hub
	id     string
	reader string // this reader's entry among the stream's readers
	lost   []byte // the terminal event when the producer is lost
	// attached is when the reader's entry was last renewed.
	attached time.Time
}

func (r *redisSource) next(ctx context.Context, after int64) (eventlog.Events, error) {
	rds := r.h.rds
	// Blocking reads are short enough to notice the client leaving (a
	// blocked read does not watch ctx) and a lost producer within the
	// lease.
	block := max(rds.PollInterval(), 20*time.Millisecond)
	for {
		if r.h.stopping.Err() != nil {
			return eventlog.Events{}, failure.ErrShutdown
		}
		// Say this reader is here from its first read on, and again
		// every block, events flowing or not: the producer's replica
		// counts it for the last-reader policy once its own readers
		// have left. (Counted only after a quiet block, a reader that
		// joined while tokens flowed was not there to the producer,
		// which cancelled under last_reader cancel.)
		if time.Since(r.attached) >= block {
			if err := rds.Attach(ctx, r.id, r.reader, 4*block); err != nil {
				return eventlog.Events{}, err
			}
			r.attached = time.Now()
		}
		ev, err := rds.Read(ctx, r.id, after, block, nil)
		if err != nil || !ev.Empty() || ctx.Err() != nil {
			return ev, errors.Join(err, ctx.Err())
		}
		// Quiet for a while: make sure somebody is still producing.
		lost, err := rds.Finish(ctx, r.id, 0, r.lost, true)
		if err != nil {
			return ev, err
		}
		if lost {
			r.h.obs.ProducerLost()
			r.h.log.Warn("stream producer lost: its replica stopped renewing the lease", "stream_id", r.id)
			continue
		}
		st, err := rds.Stat(ctx, r.id)
		if err != nil {
			return ev, err
		}
		if st.Finished && st.Last <= after {
			return ev, nil
		}
	}
}

func (r *redisSource) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.h.rds.Detach(ctx, r.id, r.reader)
}

// Follow writes the events after id after to out, framed for f, until
// the stream's terminal event, and returns how the stream ended. It
// returns outcome.ClientGone when it did not get there: the client left,
// or the source failed, which the client is told in an error event without
// an id (its resume point stays where it was).
func (r *Reader) Follow(ctx context.Context, out *relay.SSE, f Lines, after int64, named bool) outcome.End {
	src := r.src
	end := outcome.None
	for {
		ev, err := src.next(ctx, after)
		// The framing goes in a pooled buffer held while it is written,
		// not while the reader waits for the next events (see
		// relay.Buffer).
		bp := relay.Buffer()
		buf := (*bp)[:0]
		switch {
		case err != nil:
			if ctx.Err() == nil {
				buf = appendUnnumbered(buf, f, resumeError(err, after), named)
				_ = out.Write(buf)
			}
			end = outcome.ClientGone
		case ev.Empty():
			end = outcome.Done
		default:
			after = ev.Each(func(id int64, line []byte) {
				buf = appendEvent(buf, id, line, named)
				if e, ok := f.Terminal(line); ok {
					end = e
				}
			})
			if out.Write(buf) != nil {
				end = outcome.ClientGone
			}
		}
		*bp = buf
		relay.Release(bp)
		if end != outcome.None {
			return end
		}
	}
}

// resumeError is what a reader tells its client when it cannot go on.
func resumeError(err error, after int64) *failure.Error {
	switch {
	case errors.Is(err, failure.ErrShutdown):
		return &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: failure.CodeShutdown, Message: "the gateway is shutting down; resume on another instance"}
	case errors.Is(err, eventlog.ErrGap):
		return &failure.Error{Status: http.StatusGone, Type: failure.TypeInvalidRequest, Code: "resume_gap",
			Message: "the events after id " + strconv.FormatInt(after, 10) + " were dropped to bound memory (streams.max_stream_bytes); start the request again"}
	case errors.Is(err, eventlog.ErrNotFound):
		return &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "stream_not_found", Message: "the stream's retention ran out"}
	}
	return failure.Of(ErrStoreUnavailable)
}

// appendUnnumbered frames an error event without an id.
func appendUnnumbered(buf []byte, f Lines, e *failure.Error, named bool) []byte {
	if named {
		buf = append(buf, "event: error\n"...)
	}
	buf = append(buf, "data: "...)
	buf = f.Failed(buf, e)
	return append(buf, '\n')
}

// eventPrefix is how every event line begins.
const eventPrefix = `{"type":"`

// EventType returns the type of an event line.
func EventType(line []byte) []byte {
	t := line[min(len(eventPrefix), len(line)):]
	if i := bytes.IndexByte(t, '"'); i >= 0 {
		return t[:i]
	}
	return nil
}

// appendEvent frames an event line as SSE with its id, and with an event:
// line naming its type when named (for EventSource listeners).
func appendEvent(buf []byte, id int64, line []byte, named bool) []byte {
	buf = append(buf, "id: "...)
	buf = strconv.AppendInt(buf, id, 10)
	buf = append(buf, '\n')
	if named {
		buf = append(buf, "event: "...)
		buf = append(buf, EventType(line)...)
		buf = append(buf, '\n')
	}
	buf = append(buf, "data: "...)
	buf = append(buf, line...)
	return append(buf, "\n\n"...)
}
