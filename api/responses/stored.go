package responses

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/tidwall/sjson"

	"github.com/streamgate/gateway/engine"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/responsestore"
	"github.com/streamgate/gateway/resumable"
)

// storeTimeout bounds one write of a stored response: it happens at a
// stream's end, on its goroutine.
const storeTimeout = 5 * time.Second

// saver returns what keeps the response id of key, answering input, once
// its object is final; stream is a background response's resumable
// stream. It holds no request state: a background response ends after
// its request.
func (d *Dialect) saver(id, key string, input []json.RawMessage, stream string) func([]byte) {
	in, _ := json.Marshal(input) // raw messages: cannot fail
	return func(response []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		rec := &responsestore.Record{ID: id, Key: key, Input: in, Response: bytes.Clone(response), Stream: stream}
		if err := d.e.Responses.Put(ctx, rec); err != nil {
			d.e.Log.Warn("response not stored", "response_id", id, "error", err)
		}
	}
}

// notFound is the answer for a response not kept, or not the caller's:
// the two look the same.
func notFound(id string) *failure.Error {
	return &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "response_not_found", Param: "id",
		Message: "response " + failure.Quote(id) + " not found (never stored, deleted, past its retention, or another key's)"}
}

// record finds the stored response id, if it is the caller's key's.
func (d *Dialect) record(c *gin.Context, id string) (*responsestore.Record, *failure.Error) {
	rec, err := d.e.Responses.Get(c.Request.Context(), id)
	switch {
	case errors.Is(err, responsestore.ErrNotFound):
		return nil, notFound(id)
	case err != nil:
		d.e.Log.Warn("response lookup failed", "response_id", id, "error", err)
		return nil, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "response_store_unavailable", Message: "the response store is unavailable"}
	case rec.Key != middleware.Get(c).KeyName:
		return nil, notFound(id)
	}
	return rec, nil
}

// conversation is what a response continued with previous_response_id
// has behind it: the input it answered, then its output.
func conversation(rec *responsestore.Record) []json.RawMessage {
	var in []json.RawMessage
	_ = json.Unmarshal(rec.Input, &in)
	var resp struct {
		Output []json.RawMessage `json:"output"`
	}
	_ = json.Unmarshal(rec.Response, &resp)
	return append(in, resp.Output...)
}

// background starts a background response: generated into a resumable
// log by a producer that runs to the end whoever reads it. Without
// stream the answer is the response as queued; with stream the
// connection reads it as it is generated, and may leave.
func (d *Dialect) background(c *gin.Context, call *engine.Call, body *createRequest, created int64) {
	info := middleware.Get(c)
	call.Outlive()
	var (
		id     string
		queued []byte
	)
	p, _, fe := call.Generate(func(g engine.Generation) resumable.Lines {
		id = "resp_" + g.ID
		f := body.stream(g.ID, created)
		f.lines, f.background = true, true
		save := d.saver(id, info.KeyName, body.Input.itemsJSON(), g.ID)
		f.save = save
		// Stored before the producer starts, so its final state
		// cannot be overwritten by this one.
		queued = f.response(nil, "queued", nil, "", nil)
		save(queued)
		return f
	}, !body.Stream, endpoint)
	if fe != nil {
		if id != "" {
			_, _ = d.e.Responses.Delete(c.Request.Context(), id)
		}
		d.WriteError(c, fe)
		return
	}
	if !body.Stream {
		c.Data(http.StatusOK, "application/json", append(queued, '\n'))
		return
	}
	out := d.e.SSE(c.Writer)
	defer out.Stop()
	p.RunPrimary(c.Request.Context(), out, true)
	p.Report(info)
}

// get serves GET /v1/responses/{id}: the response object, or with
// stream=true a background response's events after starting_after.
func (d *Dialect) get(c *gin.Context) {
	rec, fe := d.record(c, c.Param("id"))
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	if wantsStream(c) {
		d.follow(c, rec)
		return
	}
	c.Data(http.StatusOK, "application/json", append(rec.Response, '\n'))
}

// wantsStream reports whether a GET asks for the events: stream=true in
// its query, as the API documents, or in a JSON body, which is where
// OpenAI's SDKs put it (GetStreaming).
func wantsStream(c *gin.Context) bool {
	if stream, _ := strconv.ParseBool(c.Query("stream")); stream {
		return true
	}
	if c.Request.Body == nil || c.Request.ContentLength == 0 {
		return false
	}
	b, err := io.ReadAll(io.LimitReader(c.Request.Body, 4<<10))
	if err != nil {
		return false
	}
	var body struct {
		Stream bool `json:"stream"`
	}
	return json.Unmarshal(b, &body) == nil && body.Stream
}

// follow streams a background response's events after the sequence
// number in starting_after (all of them without it), live until its end,
// from whichever replica generates it.
func (d *Dialect) follow(c *gin.Context, rec *responsestore.Record) {
	if rec.Stream == "" {
		d.WriteError(c, failure.BadParam("invalid_request", "stream", "only a background response can be streamed again"))
		return
	}
	// The log numbers its events from 1: event n has sequence number
	// n-1.
	after := int64(0)
	if v := c.Query("starting_after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			d.WriteError(c, failure.BadParam("invalid_value", "starting_after", "starting_after must be a sequence number (a non-negative integer), not "+failure.Quote(v)))
			return
		}
		after = n + 1
	}
	hub := d.e.Hub
	ref, err := hub.Lookup(c.Request.Context(), rec.Stream)
	switch {
	case errors.Is(err, eventlog.ErrNotFound):
		d.WriteError(c, &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "response_events_expired",
			Message: "the response's events are past their retention (streams.retention); GET it without stream for its final state"})
		return
	case err != nil:
		d.WriteError(c, failure.Of(resumable.ErrStoreUnavailable))
		return
	}
	t, fe := d.e.AdmitReader(c, rec.Key)
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	defer t.Settle(0, 0)
	f := newFormat(rec.Stream, "", 0, nil)
	f.lines = true
	rd, err := hub.Attach(c.Request.Context(), ref, f)
	if err != nil {
		d.WriteError(c, failure.Classify(c.Request.Context(), err))
		return
	}
	defer rd.Close()
	out := d.e.SSE(c.Writer)
	defer out.Stop()
	info := middleware.Get(c)
	info.Model = ref.State.Model
	info.End = rd.Follow(c.Request.Context(), out, f, after, true)
}

// remove serves DELETE /v1/responses/{id}. A background response still
// running goes on (cancel stops it).
func (d *Dialect) remove(c *gin.Context) {
	id := c.Param("id")
	if _, fe := d.record(c, id); fe != nil {
		d.WriteError(c, fe)
		return
	}
	if _, err := d.e.Responses.Delete(c.Request.Context(), id); err != nil {
		d.WriteError(c, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "response_store_unavailable", Message: "the response store is unavailable"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": id, "object": "response", "deleted": true})
}

// cancel serves POST /v1/responses/{id}/cancel: a background response's
// generation stops (its upstream request is cancelled), and its object
// says cancelled. A response already finished is returned as it is.
func (d *Dialect) cancel(c *gin.Context) {
	rec, fe := d.record(c, c.Param("id"))
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	if rec.Stream == "" {
		d.WriteError(c, failure.BadParam("invalid_request", "id", "only a background response can be cancelled"))
		return
	}
	resp := rec.Response
	ref, err := d.e.Hub.Lookup(c.Request.Context(), rec.Stream)
	if err == nil {
		f := newFormat(rec.Stream, "", 0, nil)
		f.lines = true
		var cancelled bool
		if cancelled, err = d.e.Hub.Cancel(c.Request.Context(), ref, f); err == nil && cancelled {
			resp, _ = sjson.SetBytes(bytes.Clone(resp), "status", "cancelled")
			middleware.Get(c).End = outcome.Cancelled
		}
	}
	if err != nil && !errors.Is(err, eventlog.ErrNotFound) {
		d.WriteError(c, failure.Of(resumable.ErrStoreUnavailable))
		return
	}
	c.Data(http.StatusOK, "application/json", append(resp, '\n'))
}

// inputItems serves GET /v1/responses/{id}/input_items: the items the
// response answered (a previous_response_id's included), as a list,
// newest first unless order=asc, limit (1–100, default 20) at a time
// after the item id in after.
func (d *Dialect) inputItems(c *gin.Context) {
	rec, fe := d.record(c, c.Param("id"))
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	var items []json.RawMessage
	_ = json.Unmarshal(rec.Input, &items)
	// Items sent without an id get one, stable for the response.
	ids := make([]string, len(items))
	for i := range items {
		var it struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(items[i], &it)
		if it.ID == "" {
			it.ID = "item_" + rec.ID[len("resp_"):] + "_" + strconv.Itoa(i)
			items[i], _ = sjson.SetBytes(items[i], "id", it.ID)
		}
		ids[i] = it.ID
	}
	switch c.DefaultQuery("order", "desc") {
	case "desc":
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j], ids[i], ids[j] = items[j], items[i], ids[j], ids[i]
		}
	case "asc":
	default:
		d.WriteError(c, failure.BadParam("invalid_value", "order", "order must be asc or desc"))
		return
	}
	limit, err := strconv.Atoi(c.DefaultQuery("limit", "20"))
	if err != nil || limit < 1 || limit > 100 {
		d.WriteError(c, failure.BadParam("invalid_value", "limit", "limit must be between 1 and 100"))
		return
	}
	start := 0
	if after := c.Query("after"); after != "" {
		for i, id := range ids {
			if id == after {
				start = i + 1
			}
		}
	}
	end := min(start+limit, len(items))
	page := append([]json.RawMessage{}, items[start:end]...)
	list := gin.H{"object": "list", "data": page, "has_more": end < len(items), "first_id": nil, "last_id": nil}
	if len(page) > 0 {
		list["first_id"], list["last_id"] = ids[start], ids[end-1]
	}
	c.JSON(http.StatusOK, list)
}
