// Package responses is OpenAI's Responses API as an inbound dialect:
// POST /v1/responses, streamed as the API's named, numbered events ending
// in exactly one of response.completed, response.incomplete or
// response.failed, or answered with one response object; errors in
// OpenAI's envelope. Requests are translated for every provider
// (docs/responses.md).
package responses

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/engine"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
)

// endpoint labels this dialect's streams in metrics.
const endpoint = "responses"

// Dialect serves the Responses API on an engine.
type Dialect struct{ e *engine.Engine }

// New returns the dialect on e.
func New(e *engine.Engine) *Dialect { return &Dialect{e: e} }

var _ api.Dialect = (*Dialect)(nil)

// Register adds POST /responses and the routes of stored responses: GET
// and DELETE /responses/{id}, GET /responses/{id}/input_items and POST
// /responses/{id}/cancel.
func (d *Dialect) Register(authed, _ gin.IRouter) {
	authed.POST("/responses", d.create)
	authed.GET("/responses/:id", d.get)
	authed.DELETE("/responses/:id", d.remove)
	authed.GET("/responses/:id/input_items", d.inputItems)
	authed.POST("/responses/:id/cancel", d.cancel)
}

// WriteError answers with OpenAI's {"error":{...}}, as the Responses API
// does.
func (d *Dialect) WriteError(c *gin.Context, e *failure.Error) { api.WriteError(c, e) }

// create serves POST /v1/responses.
func (d *Dialect) create(c *gin.Context) {
	var body createRequest
	if fe := api.DecodeJSON(c.Request, &body, false); fe != nil {
		d.WriteError(c, fe)
		return
	}
	info := middleware.Get(c)
	if id := body.PreviousResponseID; id != "" {
		prev, fe := d.record(c, id)
		if fe != nil {
			fe.Param = "previous_response_id"
			d.WriteError(c, fe)
			return
		}
		if err := body.Input.prepend(conversation(prev)); err != nil {
			d.WriteError(c, &failure.Error{Status: http.StatusInternalServerError, Type: failure.TypeServer, Code: "stored_response_unreadable",
				Message: "the stored response " + failure.Quote(id) + " could not be read: " + err.Error()})
			return
		}
	}
	req, fe := body.ToProvider()
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	call, fe := d.e.Accept(c, req, body.Model)
	if fe != nil {
		d.WriteError(c, fe)
		return
	}
	created := time.Now().Unix()
	if body.Background {
		d.background(c, call, &body, created)
		return
	}
	f := body.stream(info.RequestID, created)
	if body.stored() {
		f.save = d.saver("resp_"+info.RequestID, info.KeyName, body.Input.itemsJSON(), "")
	}
	if !body.Stream {
		d.complete(c, call, f)
		return
	}
	if e := call.Stream(f, endpoint); e != nil {
		d.WriteError(c, e)
		return
	}
	f.abandoned()
}

// complete answers stream=false with the response object the stream
// would have ended with.
func (d *Dialect) complete(c *gin.Context, call *engine.Call, f *format) {
	ans, res, e := call.Complete(endpoint)
	if e != nil {
		d.WriteError(c, e)
		return
	}
	if len(ans.Raw) > 0 {
		// From an upstream that speaks the API: its final object.
		f.relay(nil, string(ans.Raw))
		if len(f.final) == 0 {
			d.WriteError(c, &failure.Error{Status: http.StatusBadGateway, Type: failure.TypeServer, Code: "upstream_malformed", Message: "the upstream's response ended without its final object"})
			return
		}
		resp := f.finalObject()
		f.saved(resp)
		c.Data(http.StatusOK, "application/json", append(resp, '\n'))
		return
	}
	f.answer(&ans)
	status, reason := "completed", incompleteReason(res.FinishReason)
	if reason != "" {
		status = "incomplete"
	}
	for i := range f.items {
		f.items[i].status = status
	}
	resp := f.response(nil, status, nil, reason, &res)
	f.saved(resp)
	c.Data(http.StatusOK, "application/json", append(resp, '\n'))
}

// answer takes a whole answer in as the format's items: the reasoning,
// the message, then the calls.
func (f *format) answer(ans *relay.Answer) {
	add := func(k kind, text string, tc *providers.ToolCall) {
		it := newItem(k, f.ref, len(f.items))
		it.text = []byte(text)
		if tc != nil {
			it.callID, it.name = tc.ID, tc.Function.Name
		}
		f.items = append(f.items, it)
	}
	if ans.Reasoning != "" {
		add(reasoningItem, ans.Reasoning, nil)
	}
	if ans.Content != "" {
		add(messageItem, ans.Content, nil)
	}
	for i := range ans.ToolCalls {
		add(callItem, ans.ToolCalls[i].Function.Arguments, &ans.ToolCalls[i])
	}
}

// stream returns the format of response ref ("resp_" + ref), created at
// created, answering r.
func (r *createRequest) stream(ref string, created int64) *format {
	f := newFormat(ref, r.Model, created, r.echo())
	f.prev = r.PreviousResponseID
	return f
}

// echo renders the request's settings as the response object repeats
// them: what was asked, or the API's defaults.
func (r *createRequest) echo() []byte {
	b := make([]byte, 0, 320)
	b = echoField(b, "instructions", r.Instructions, r.Instructions != nil, "null")
	b = echoField(b, "max_output_tokens", r.MaxOutputTokens, r.MaxOutputTokens != nil, "null")
	b = echoField(b, "metadata", r.Metadata, r.Metadata != nil, "{}")
	b = echoField(b, "parallel_tool_calls", r.ParallelToolCalls, r.ParallelToolCalls != nil, "true")
	b = echoField(b, "previous_response_id", r.PreviousResponseID, r.PreviousResponseID != "", "null")
	var effort, summary string
	if r.Reasoning != nil {
		effort, summary = r.Reasoning.Effort, r.Reasoning.Summary
	}
	b = append(b, `,"reasoning":{"effort":`...)
	b = echoValue(b, effort, effort != "", "null")
	b = append(b, `,"summary":`...)
	b = echoValue(b, summary, summary != "", "null")
	b = append(b, `},"store":`...)
	b = strconv.AppendBool(b, r.stored())
	b = echoField(b, "temperature", r.Temperature, r.Temperature != nil, "null")
	b = echoField(b, "text", r.Text, r.Text != nil, `{"format":{"type":"text"}}`)
	tc := api.NullToEmpty(r.ToolChoice)
	b = echoField(b, "tool_choice", tc, len(tc) > 0, `"auto"`)
	b = echoField(b, "tools", r.Tools, len(r.Tools) > 0, "[]")
	b = echoField(b, "top_p", r.TopP, r.TopP != nil, "null")
	b = append(b, `,"truncation":"disabled"`...)
	return echoField(b, "user", r.User, r.User != "", "null")
}

// echoField appends ,"name": and echoValue's value.
func echoField(b []byte, name string, v any, set bool, unset string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return echoValue(b, v, set, unset)
}

// echoValue appends v as JSON when the request set it, otherwise unset
// (the API's default, as JSON). Only what a client set is marshalled:
// the defaults by reflection were 2% of the endpoint's CPU with 64-token
// streams back to back (issue 18).
func echoValue(b []byte, v any, set bool, unset string) []byte {
	if !set {
		return append(b, unset...)
	}
	j, _ := json.Marshal(v) // plain values: cannot fail
	return append(b, j...)
}
