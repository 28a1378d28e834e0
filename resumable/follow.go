package gateway

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/middleware"
)

// handleCreateStream serves POST /v1/streams: the same request as POST
// /v1/stream, but the generation runs without holding the connection; the
// answer says where to follow it.
func (s *Server) handleCreateStream(c *gin.Context) {
	start := time.Now()
	var body streamRequest
	req, routes, adm, ok := s.accept(c, &body, true)
	if !ok {
		return
	}
	p, ok := s.startStream(c, routes, req, adm, body.Model, start, true)
	if !ok {
		return
	}
	c.Header("Location", p.eventsURL)
	c.JSON(http.StatusCreated, gin.H{"id": p.id, "object": "stream", "model": body.Model, "created": start.Unix(),
		"events_url": p.eventsURL, "token_expires_at": p.tokenExp})
}

// handleStreamEvents serves GET /v1/streams/{id}: the stream's events as
// SSE from the beginning, or after the id in Last-Event-ID (or the
// last_event_id query parameter), then live until its terminal event.
func (s *Server) handleStreamEvents(c *gin.Context) {
	ref, ok := s.findStream(c)
	if !ok {
		return
	}
	after, e := resumePoint(c)
	if e != nil {
		s.fail(c, e)
		return
	}
	info := middleware.Get(c)
	info.Model = ref.state.Model
	if ref.state.Finished && after >= ref.state.Last {
		// Nothing new will ever come. 204 also tells an EventSource
		// to stop reconnecting.
		c.Status(http.StatusNoContent)
		return
	}
	named, _ := strconv.ParseBool(c.Query("named_events"))
	src := s.source(ref)
	defer src.close()
	out := startSSE(c.Writer, s.cfg.Server.HeartbeatInterval.Std(), s.cfg.Server.WriteTimeout.Std())
	defer out.stop()
	if out.write(s.retryFrame) != nil {
		return
	}
	switch s.follow(c.Request.Context(), out, src, after, named) {
	case "done":
		info.End = "done"
	case "error":
		info.End = "stream_error"
	default:
		info.End = "client_gone"
	}
}

// handleCancelStream serves DELETE /v1/streams/{id}: the generation stops
// (its upstream request is cancelled) and readers get an error event with
// code cancelled. The stream stays replayable for its retention.
func (s *Server) handleCancelStream(c *gin.Context) {
	ref, ok := s.findStream(c)
	if !ok {
		return
	}
	cancelled := false
	if p := s.streams.producer(ref.id); p != nil {
		cancelled = p.stop(errStreamCancelled)
	} else if ref.log == nil && !ref.state.Finished {
		// Produced on another replica: end it in Redis. Its producer
		// learns at its next append or lease renewal, and cancels its
		// upstream.
		var err error
		cancelled, err = s.streams.rds.Finish(c.Request.Context(), ref.id, s.cancelledLine, false)
		if err != nil {
			s.fail(c, errStoreUnavailable)
			return
		}
	}
	if cancelled {
		s.metrics.streamsCancelled.WithLabelValues("delete").Inc()
	}
	c.JSON(http.StatusOK, gin.H{"id": ref.id, "object": "stream", "cancelled": cancelled})
}

var errStoreUnavailable = &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: "stream_store_unavailable", Message: "the stream store (Redis) is unavailable"}

// streamRef is a stream found for a request: in this replica's memory, or
// (log nil) only in Redis.
type streamRef struct {
	id    string
	log   *eventlog.Log
	state eventlog.State
}

// findStream authorizes a request on the stream in its path and finds the
// stream. Access takes the token of the stream's events URL, or the API
// key that started it; never a key in the URL. It answers the client
// itself when it reports false.
func (s *Server) findStream(c *gin.Context) (streamRef, bool) {
	id := c.Param("id")
	notFound := &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "stream_not_found",
		Message: "stream " + strconv.Quote(id) + " does not exist, or its retention ran out"}
	if !validStreamID(id) {
		s.fail(c, notFound)
		return streamRef{}, false
	}
	tok, key := c.Query("token"), ""
	switch {
	case tok != "":
		if err := s.streams.verify(id, tok, time.Now()); err != nil {
			s.fail(c, &apiError{Status: http.StatusForbidden, Type: typeInvalidRequest, Code: "invalid_stream_token", Message: err.Error()})
			return streamRef{}, false
		}
	case !s.cfg.Auth.AuthEnabled():
		s.fail(c, &apiError{Status: http.StatusUnauthorized, Type: typeInvalidRequest, Code: "missing_stream_token",
			Message: "send the token of the stream's events URL (?token=...)"})
		return streamRef{}, false
	default:
		name, msg := middleware.Identify(s.lim.digests, c.Request)
		if msg == middleware.ErrNoKey {
			msg = "send the token of the stream's events URL (?token=...), or the API key that started the stream"
		}
		if msg != "" {
			middleware.Deny(c, msg)
			return streamRef{}, false
		}
		key = name
		middleware.Get(c).KeyName = name
	}
	ref, err := s.lookupStream(c.Request.Context(), id)
	switch {
	case errors.Is(err, eventlog.ErrNotFound):
		s.fail(c, notFound)
		return streamRef{}, false
	case err != nil:
		s.log.Warn("stream lookup failed", "stream_id", id, "error", err)
		s.fail(c, errStoreUnavailable)
		return streamRef{}, false
	case tok == "" && ref.state.Key != key:
		s.fail(c, &apiError{Status: http.StatusForbidden, Type: typeInvalidRequest, Code: "stream_forbidden", Message: "the stream was started with another API key"})
		return streamRef{}, false
	}
	return ref, true
}

func (s *Server) lookupStream(ctx context.Context, id string) (streamRef, error) {
	if l, err := s.streams.mem.Get(id); err == nil {
		last, finished := l.Last()
		return streamRef{id: id, log: l, state: eventlog.State{Meta: l.Meta, Last: last, Finished: finished}}, nil
	}
	if s.streams.rds == nil {
		return streamRef{}, eventlog.ErrNotFound
	}
	st, err := s.streams.rds.Stat(ctx, id)
	return streamRef{id: id, state: st}, err
}

// resumePoint reads the id of the last event a client has: the
// Last-Event-ID header (EventSource sends it when it reconnects), else the
// last_event_id query parameter; 0 when neither is there.
func resumePoint(c *gin.Context) (int64, *apiError) {
	v := c.GetHeader("Last-Event-ID")
	if v == "" {
		v = c.Query("last_event_id")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: "invalid_last_event_id",
			Message: "Last-Event-ID " + strconv.Quote(v) + " is not an event id (a non-negative integer)"}
	}
	return n, nil
}

// eventSource is where a reader gets a stream's events.
type eventSource interface {
	// next returns the events after id after, waiting for some; none
	// (and no error) when the stream has ended and none will come.
	next(ctx context.Context, after int64) (eventlog.Events, error)
	close()
}

func (s *Server) source(ref streamRef) eventSource {
	if ref.log != nil {
		s.metrics.resumes.WithLabelValues("memory").Inc()
		return &memSource{r: ref.log.Attach(0)}
	}
	s.metrics.resumes.WithLabelValues("redis").Inc()
	return &redisSource{s: s, id: ref.id, reader: newStreamID()}
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
	s      *Server
	id     string
	reader string // this reader's entry among the stream's readers
}

func (r *redisSource) next(ctx context.Context, after int64) (eventlog.Events, error) {
	rds := r.s.streams.rds
	// Blocking reads are short enough to notice the client leaving (a
	// blocked read does not watch ctx) and a lost producer within the
	// lease.
	block := max(rds.PollInterval(), 20*time.Millisecond)
	for {
		if r.s.stopping.Err() != nil {
			return eventlog.Events{}, errShutdown
		}
		ev, err := rds.Read(ctx, r.id, after, block, nil)
		if err != nil || !ev.Empty() || ctx.Err() != nil {
			return ev, errors.Join(err, ctx.Err())
		}
		// Quiet for a while: say this reader is still here, and make
		// sure somebody is still producing.
		if err := rds.Attach(ctx, r.id, r.reader, 4*block); err != nil {
			return ev, err
		}
		lost, err := rds.Finish(ctx, r.id, r.s.lostLine, true)
		if err != nil {
			return ev, err
		}
		if lost {
			r.s.metrics.producersLost.Inc()
			r.s.log.Warn("stream producer lost: its replica stopped renewing the lease", "stream_id", r.id)
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
	_ = r.s.streams.rds.Detach(ctx, r.id, r.reader)
}

// follow writes the events of src after id after to out, until the
// stream's terminal event, whose type it returns ("done" or "error"). It
// returns "" when it did not get there: the client left, or src failed,
// which the client is told in an error event without an id (its resume
// point stays where it was).
func (s *Server) follow(ctx context.Context, out *sseWriter, src eventSource, after int64, named bool) string {
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; bufPool.Put(bp) }()
	end := ""
	for {
		ev, err := src.next(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return ""
			}
			_ = out.write(appendUnnumbered(buf[:0], resumeError(err, after), named))
			return ""
		}
		if ev.Empty() {
			return "done"
		}
		buf = buf[:0]
		after = ev.Each(func(id int64, line []byte) {
			buf = appendEvent(buf, id, line, named)
			if terminal(line) {
				end = string(eventType(line))
			}
		})
		if out.write(buf) != nil {
			return ""
		}
		if end != "" {
			return end
		}
	}
}

// resumeError is what a reader tells its client when it cannot go on.
func resumeError(err error, after int64) *apiError {
	switch {
	case errors.Is(err, errShutdown):
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: "server_shutdown", Message: "the gateway is shutting down; resume on another instance"}
	case errors.Is(err, eventlog.ErrGap):
		return &apiError{Status: http.StatusGone, Type: typeInvalidRequest, Code: "resume_gap",
			Message: "the events after id " + strconv.FormatInt(after, 10) + " were dropped to bound memory (streams.max_stream_bytes); start the request again"}
	case errors.Is(err, eventlog.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "stream_not_found", Message: "the stream's retention ran out"}
	}
	return errStoreUnavailable
}

// appendUnnumbered frames an error event without an id.
func appendUnnumbered(buf []byte, e *apiError, named bool) []byte {
	if named {
		buf = append(buf, "event: error\n"...)
	}
	buf = append(buf, "data: "...)
	buf = (&nativeFormat{}).failed(buf, e)
	return append(buf, '\n')
}
