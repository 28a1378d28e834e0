// Package native is the gateway's own streaming API: POST /v1/stream
// (numbered events: connected, delta, then exactly one done or error),
// and resumable streams, POST /v1/streams, GET and DELETE
// /v1/streams/{id}. Errors use OpenAI's envelope.
package native

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/engine"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/resumable"
)

// endpoint labels this dialect's streams in metrics.
const endpoint = "native"

// Dialect serves the native API on an engine.
type Dialect struct{ e *engine.Engine }

// New returns the dialect on e.
func New(e *engine.Engine) *Dialect { return &Dialect{e: e} }

var _ api.Dialect = (*Dialect)(nil)

// Register adds the native routes. An events URL carries its own token
// (EventSource cannot send headers), so GET and DELETE of a stream check
// access themselves.
func (d *Dialect) Register(authed, open gin.IRouter) {
	authed.POST("/stream", d.stream)
	authed.POST("/streams", d.createStream)
	open.GET("/streams/:id", d.streamEvents)
	open.DELETE("/streams/:id", d.cancelStream)
}

// WriteError answers with {"error":{...}}, the envelope OpenAI's API
// uses.
func (d *Dialect) WriteError(c *gin.Context, e *failure.Error) { api.WriteError(c, e) }

// accept decodes and admits a request; when it reports false it has
// answered.
func (d *Dialect) accept(c *gin.Context) (*engine.Call, *streamRequest, bool) {
	var body streamRequest
	call, ok := api.Accept(c, d.e, &body, true, d.WriteError)
	return call, &body, ok
}

// formatFor returns the stream's format, announcing its id and where to
// resume it.
func formatFor(c *gin.Context, model string) func(engine.Generation) resumable.Lines {
	return func(g engine.Generation) resumable.Lines {
		return &format{requestID: middleware.Get(c).RequestID, model: model, streamID: g.ID, resumeURL: g.EventsURL}
	}
}

// stream serves POST /v1/stream. The generation runs on a producer that
// writes the stream's log; this connection is its primary reader, written
// by the producer itself on this goroutine, and others may resume the
// stream from the log.
func (d *Dialect) stream(c *gin.Context) {
	call, body, ok := d.accept(c)
	if !ok {
		return
	}
	named := body.NamedEvents
	if v, err := strconv.ParseBool(c.Query("named_events")); err == nil {
		named = v
	}
	p, _, e := call.Generate(formatFor(c, body.Model), false, endpoint)
	if e != nil {
		d.WriteError(c, e)
		return
	}
	out := d.e.SSE(c.Writer)
	defer out.Stop()
	stayed := p.RunPrimary(c.Request.Context(), out, named)
	info := middleware.Get(c)
	p.Report(info)
	if !stayed {
		ended := info.End.String()
		info.End, info.ErrorCode, info.Error = outcome.ClientGone, failure.CodeClientClosed, "the client left; the stream ended "+ended
	}
}

// createStream serves POST /v1/streams: the same request as POST
// /v1/stream, but the generation runs without holding the connection; the
// answer says where to follow it.
func (d *Dialect) createStream(c *gin.Context) {
	call, body, ok := d.accept(c)
	if !ok {
		return
	}
	_, g, e := call.Generate(formatFor(c, body.Model), true, endpoint)
	if e != nil {
		d.WriteError(c, e)
		return
	}
	c.Header("Location", g.EventsURL)
	c.JSON(http.StatusCreated, gin.H{"id": g.ID, "object": "stream", "model": body.Model, "created": middleware.Get(c).Start.Unix(),
		"events_url": g.EventsURL, "token_expires_at": g.TokenExp})
}

// streamEvents serves GET /v1/streams/{id}: the stream's events as SSE
// from the beginning, or after the id in Last-Event-ID (or the
// last_event_id query parameter), then live until its terminal event.
func (d *Dialect) streamEvents(c *gin.Context) {
	ref, ok := d.find(c)
	if !ok {
		return
	}
	after, e := resumePoint(c)
	if e != nil {
		d.WriteError(c, e)
		return
	}
	info := middleware.Get(c)
	info.Model = ref.State.Model
	if ref.State.Finished && after >= ref.State.Last {
		// Nothing new will ever come. 204 also tells an EventSource
		// to stop reconnecting.
		c.Status(http.StatusNoContent)
		return
	}
	named, _ := strconv.ParseBool(c.Query("named_events"))
	// A reader is a stream to its client: it counts against the limits
	// of the key the stream belongs to (or of the reader's address).
	t, e := d.e.AdmitReader(c, ref.State.Key)
	if e != nil {
		d.WriteError(c, e)
		return
	}
	defer t.Settle(0, 0)
	hub := d.e.Hub
	f := &format{}
	rd, err := hub.Attach(c.Request.Context(), ref, f)
	if err != nil {
		d.WriteError(c, failure.Classify(c.Request.Context(), err))
		return
	}
	defer rd.Close()
	out := d.e.SSE(c.Writer)
	defer out.Stop()
	if out.Write(hub.RetryFrame()) != nil {
		return
	}
	info.End = rd.Follow(c.Request.Context(), out, f, after, named)
}

// cancelStream serves DELETE /v1/streams/{id}: the generation stops (its
// upstream request is cancelled) and readers get an error event with code
// cancelled. The stream stays replayable for its retention.
func (d *Dialect) cancelStream(c *gin.Context) {
	ref, ok := d.find(c)
	if !ok {
		return
	}
	cancelled, err := d.e.Hub.Cancel(c.Request.Context(), ref, &format{})
	if err != nil {
		d.WriteError(c, failure.Of(resumable.ErrStoreUnavailable))
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": ref.ID, "object": "stream", "cancelled": cancelled})
}

// find authorizes a request on the stream in its path and finds the
// stream. Access takes the token of the stream's events URL, or the API
// key that started it; never a key in the URL. It answers the client
// itself when it reports false.
func (d *Dialect) find(c *gin.Context) (resumable.Ref, bool) {
	id := c.Param("id")
	notFound := &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "stream_not_found",
		Message: "stream " + failure.Quote(id) + " does not exist, or its retention ran out"}
	if !resumable.ValidID(id) {
		d.WriteError(c, notFound)
		return resumable.Ref{}, false
	}
	hub := d.e.Hub
	tok, key := c.Query("token"), ""
	switch {
	case tok != "":
		if err := hub.Verify(id, tok, time.Now()); err != nil {
			d.WriteError(c, &failure.Error{Status: http.StatusForbidden, Type: failure.TypeInvalidRequest, Code: "invalid_stream_token", Message: err.Error()})
			return resumable.Ref{}, false
		}
	case !d.e.AuthEnabled():
		d.WriteError(c, &failure.Error{Status: http.StatusUnauthorized, Type: failure.TypeInvalidRequest, Code: "missing_stream_token",
			Message: "send the token of the stream's events URL (?token=...)"})
		return resumable.Ref{}, false
	default:
		name, e := d.e.Keys.Identify(c.Request)
		if e != nil {
			if e.Message == middleware.ErrNoKey {
				e.Message = "send the token of the stream's events URL (?token=...), or the API key that started the stream"
			}
			middleware.Refuse(c, e, d.WriteError)
			return resumable.Ref{}, false
		}
		key = name
		middleware.Get(c).KeyName = name
	}
	ref, err := hub.Lookup(c.Request.Context(), id)
	switch {
	case errors.Is(err, eventlog.ErrNotFound):
		d.WriteError(c, notFound)
		return resumable.Ref{}, false
	case err != nil:
		d.e.Log.Warn("stream lookup failed", "stream_id", id, "error", err)
		d.WriteError(c, failure.Of(resumable.ErrStoreUnavailable))
		return resumable.Ref{}, false
	case tok == "" && ref.State.Key != key:
		d.WriteError(c, &failure.Error{Status: http.StatusForbidden, Type: failure.TypeInvalidRequest, Code: "stream_forbidden", Message: "the stream was started with another API key"})
		return resumable.Ref{}, false
	}
	return ref, true
}

// resumePoint reads the id of the last event a client has: the
// Last-Event-ID header (EventSource sends it when it reconnects), else the
// last_event_id query parameter; 0 when neither is there.
func resumePoint(c *gin.Context) (int64, *failure.Error) {
	v := c.GetHeader("Last-Event-ID")
	if v == "" {
		v = c.Query("last_event_id")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, failure.BadRequest("invalid_last_event_id", "Last-Event-ID "+failure.Quote(v)+" is not an event id (a non-negative integer)")
	}
	return n, nil
}
