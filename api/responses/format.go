package responses

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
	"github.com/streamgate/gateway/resumable"
)

// kind is an output item's type.
type kind uint8

const (
	reasoningItem kind = iota + 1
	messageItem
	callItem
)

// outItem is an output item as it grows: its text (the reasoning, the
// message's text, or the call's arguments) and, for a call, its name and
// call id.
type outItem struct {
	kind kind
	id   string
	// ref is `,"item_id":"<id>","output_index":<n>`, which every event
	// about the item carries: rendered once, not at each delta.
	ref          string
	callID, name string
	text         []byte
	status       string
	// toolIndex is the upstream's index of a call.
	toolIndex int
}

// format is the Responses API's event stream: response.created and
// response.in_progress, then for each output item output_item.added, its
// content part (reasoning_text or output_text) and deltas, or a function
// call's argument deltas, and output_item.done; then exactly one of
// response.completed (a complete answer), response.incomplete (cut by
// max_output_tokens or a content filter) or response.failed. Every event
// carries the next sequence_number.
type format struct {
	// head renders the response object's fields up to its status
	// (id, object, created_at, model); echo those after output (the
	// request's settings, as OpenAI repeats them).
	head, echo []byte
	// ref is the part of the response's id its items' ids share.
	ref   string
	seq   int
	items []outItem
	// open is the index in items of the item still streaming, or -1.
	open int
	// lines renders each event as one JSON line, for a resumable
	// stream's log (whose readers frame it), instead of an SSE frame.
	lines bool
	// save, when set, is given the response object at the end, whatever
	// the end (store: true).
	save func(response []byte)
	// background is said in the response object.
	background bool
	// ended is set once the response object is final.
	ended bool
	// prev is the previous_response_id the request continued, which an
	// upstream speaking the API never saw.
	prev string

	// native is set at the first chunk relayed from an upstream that
	// speaks the API (Chunk.Raw): its events then go out as they came,
	// numbered by the gateway, and the translation is idle.
	native bool
	// final is that upstream's response object at its end, held until
	// the engine says the answer is complete; out its output items by
	// index, as done, or as added and marked incomplete, for a response
	// that fails before that.
	final []byte
	out   [][]byte
}

// maxOutputItems bounds the output items of a relayed response that the
// format keeps.
const maxOutputItems = 4096

var _ resumable.Lines = (*format)(nil)

// newFormat returns the stream of response ref ("resp_" + ref is its
// id), answered by model, created at created, with echo the request's
// settings as the response object repeats them (",..." fields).
func newFormat(ref, model string, created int64, echo []byte) *format {
	id := "resp_" + ref
	h := make([]byte, 0, 128)
	h = append(h, `{"id":`...)
	h = jsonstr.Append(h, id)
	h = append(h, `,"object":"response","created_at":`...)
	h = strconv.AppendInt(h, created, 10)
	h = append(h, `,"model":`...)
	h = jsonstr.Append(h, model)
	return &format{head: h, echo: echo, ref: ref, open: -1}
}

// event appends the start of an event of type typ, up to its sequence
// number; the caller appends its fields and "}\n\n".
func (f *format) event(buf []byte, typ string) []byte {
	if !f.lines {
		buf = append(buf, "event: "...)
		buf = append(buf, typ...)
		buf = append(buf, "\ndata: "...)
	}
	buf = append(buf, "{\"type\":\""...)
	buf = append(buf, typ...)
	buf = append(buf, `","sequence_number":`...)
	buf = strconv.AppendInt(buf, int64(f.seq), 10)
	f.seq++
	return buf
}

// end closes an event begun with event (its fields appended).
func (f *format) end(buf []byte) []byte {
	if f.lines {
		return append(buf, "}\n"...)
	}
	return append(buf, "}\n\n"...)
}

// response appends the response object with status; e is its error
// (failed), reason why it is incomplete, r its usage (nil while it runs).
func (f *format) response(buf []byte, status string, e *failure.Error, reason string, r *relay.Result) []byte {
	buf = append(buf, f.head...)
	buf = append(buf, `,"status":"`...)
	buf = append(buf, status...)
	buf = append(buf, `","background":`...)
	buf = strconv.AppendBool(buf, f.background)
	buf = append(buf, `,"error":`...)
	if e != nil {
		buf = append(buf, `{"code":`...)
		buf = jsonstr.Append(buf, e.Code)
		buf = append(buf, `,"message":`...)
		buf = jsonstr.Append(buf, e.Message)
		buf = append(buf, '}')
	} else {
		buf = append(buf, "null"...)
	}
	buf = append(buf, `,"incomplete_details":`...)
	if reason != "" {
		buf = append(buf, `{"reason":"`...)
		buf = append(buf, reason...)
		buf = append(buf, `"}`...)
	} else {
		buf = append(buf, "null"...)
	}
	buf = append(buf, `,"output":[`...)
	for i := range f.items {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = f.item(buf, &f.items[i], true)
	}
	for _, it := range f.out {
		if len(it) == 0 {
			continue
		}
		if buf[len(buf)-1] != '[' {
			buf = append(buf, ',')
		}
		buf = append(buf, it...)
	}
	buf = append(buf, `],"usage":`...)
	if r == nil {
		buf = append(buf, "null"...)
	} else {
		buf = appendUsage(buf, &r.Usage)
		if r.UsageEstimated {
			buf = append(buf, `,"usage_estimated":true`...)
		}
	}
	buf = append(buf, f.echo...)
	return append(buf, '}')
}

// item appends an item's JSON: with its content when full, as first
// announced otherwise.
func (f *format) item(buf []byte, it *outItem, full bool) []byte {
	buf = append(buf, `{"id":`...)
	buf = jsonstr.Append(buf, it.id)
	switch it.kind {
	case reasoningItem:
		buf = append(buf, `,"type":"reasoning","summary":[],"content":[`...)
		if full {
			buf = append(buf, `{"type":"reasoning_text","text":`...)
			buf = jsonstr.AppendBytes(buf, it.text)
			buf = append(buf, '}')
		}
		buf = append(buf, ']')
	case messageItem:
		buf = append(buf, `,"type":"message","status":"`...)
		buf = append(buf, it.status...)
		buf = append(buf, `","role":"assistant","content":[`...)
		if full {
			buf = appendTextPart(buf, it.text)
		}
		buf = append(buf, ']')
	case callItem:
		buf = append(buf, `,"type":"function_call","status":"`...)
		buf = append(buf, it.status...)
		buf = append(buf, `","call_id":`...)
		buf = jsonstr.Append(buf, it.callID)
		buf = append(buf, `,"name":`...)
		buf = jsonstr.Append(buf, it.name)
		buf = append(buf, `,"arguments":`...)
		if full {
			buf = jsonstr.AppendBytes(buf, it.text)
		} else {
			buf = append(buf, `""`...)
		}
	}
	return append(buf, '}')
}

func appendTextPart(buf, text []byte) []byte {
	buf = append(buf, `{"type":"output_text","text":`...)
	buf = jsonstr.AppendBytes(buf, text)
	return append(buf, `,"annotations":[],"logprobs":[]}`...)
}

// Opened announces the response: created, then in progress.
func (f *format) Opened(buf []byte, _ string) []byte {
	for _, typ := range [2]string{"response.created", "response.in_progress"} {
		buf = f.event(buf, typ)
		buf = append(buf, `,"response":`...)
		buf = f.response(buf, "in_progress", nil, "", nil)
		buf = f.end(buf)
	}
	return buf
}

func (f *format) Chunk(buf []byte, c *providers.Chunk) []byte {
	if c.Raw != "" {
		f.native = true
		return f.relay(buf, c.Raw)
	}
	if f.native {
		return buf
	}
	if c.Reasoning != "" {
		buf = f.ensure(buf, reasoningItem, nil)
		buf = f.delta(buf, "response.reasoning_text.delta", c.Reasoning, true)
	}
	if c.Content != "" {
		buf = f.ensure(buf, messageItem, nil)
		buf = f.delta(buf, "response.output_text.delta", c.Content, true)
	}
	for i := range c.ToolCalls {
		buf = f.toolCall(buf, &c.ToolCalls[i])
	}
	return buf
}

// ensure makes the open item one of kind k (for a call, the call d
// starts), closing the open one if it is not.
func (f *format) ensure(buf []byte, k kind, d *providers.ToolCallDelta) []byte {
	if f.open >= 0 && f.items[f.open].kind == k && k != callItem {
		return buf
	}
	buf = f.close(buf, "completed")
	n := len(f.items)
	it := newItem(k, f.ref, n)
	it.status = "in_progress"
	if d != nil {
		it.callID, it.name, it.toolIndex = d.ID, d.Name, d.Index
	}
	f.items = append(f.items, it)
	f.open = n
	buf = f.event(buf, "response.output_item.added")
	buf = append(buf, `,"output_index":`...)
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, `,"item":`...)
	buf = f.item(buf, &f.items[n], false)
	buf = f.end(buf)
	switch k {
	case reasoningItem:
		buf = f.part(buf, "response.content_part.added", `{"type":"reasoning_text","text":""}`)
	case messageItem:
		buf = f.part(buf, "response.content_part.added", `{"type":"output_text","text":"","annotations":[],"logprobs":[]}`)
	}
	return buf
}

// newItem is the n-th output item of response ref, of kind k.
func newItem(k kind, ref string, n int) outItem {
	it := outItem{kind: k, id: itemID(k, ref, n)}
	b := jsonstr.Append([]byte(`,"item_id":`), it.id)
	b = append(b, `,"output_index":`...)
	it.ref = string(strconv.AppendInt(b, int64(n), 10))
	return it
}

// itemID is the id of the n-th output item of response ref.
func itemID(k kind, ref string, n int) string {
	prefix := "msg_"
	switch k {
	case reasoningItem:
		prefix = "rs_"
	case callItem:
		prefix = "fc_"
	}
	return prefix + ref + "_" + strconv.Itoa(n)
}

// part appends a content part event of the open item.
func (f *format) part(buf []byte, typ, part string) []byte {
	buf = f.itemEvent(buf, typ, f.open)
	buf = append(buf, `,"content_index":0,"part":`...)
	buf = append(buf, part...)
	return f.end(buf)
}

// itemEvent appends the start of an event about item i.
func (f *format) itemEvent(buf []byte, typ string, i int) []byte {
	buf = f.event(buf, typ)
	return append(buf, f.items[i].ref...)
}

// delta appends a delta event of the open item and keeps its text.
func (f *format) delta(buf []byte, typ, s string, content bool) []byte {
	return f.deltaOf(buf, f.open, typ, s, content)
}

// textStart is the room an item's text starts with: some 50 tokens.
const textStart = 256

func (f *format) deltaOf(buf []byte, i int, typ, s string, content bool) []byte {
	it := &f.items[i]
	if it.text == nil {
		// Grown from nothing, a 64-token answer's text went through
		// seven arrays (5% of the bytes a Responses stream allocated).
		it.text = make([]byte, 0, textStart)
	}
	it.text = append(it.text, s...)
	buf = f.itemEvent(buf, typ, i)
	if content {
		buf = append(buf, `,"content_index":0`...)
	}
	buf = append(buf, `,"delta":`...)
	buf = jsonstr.Append(buf, s)
	if it.kind == messageItem {
		buf = append(buf, `,"logprobs":[]`...)
	}
	return f.end(buf)
}

// toolCall translates a tool-call delta: the first of a call opens a
// function_call item; arguments are its deltas.
func (f *format) toolCall(buf []byte, d *providers.ToolCallDelta) []byte {
	i := -1
	for j := range f.items {
		if f.items[j].kind == callItem && f.items[j].toolIndex == d.Index {
			i = j
		}
	}
	if i < 0 {
		buf = f.ensure(buf, callItem, d)
		i = f.open
	}
	if d.Arguments == "" {
		return buf
	}
	// Calls stream one after another; should an upstream interleave
	// them, a delta goes to its own call's item.
	return f.deltaOf(buf, i, "response.function_call_arguments.delta", d.Arguments, false)
}

// close ends the open item with status: its done events, then
// output_item.done.
func (f *format) close(buf []byte, status string) []byte {
	if f.open < 0 {
		return buf
	}
	i := f.open
	it := &f.items[i]
	f.open = -1
	switch it.kind {
	case reasoningItem:
		buf = f.itemEvent(buf, "response.reasoning_text.done", i)
		buf = append(buf, `,"content_index":0,"text":`...)
		buf = jsonstr.AppendBytes(buf, it.text)
		buf = f.end(buf)
		buf = f.itemEvent(buf, "response.content_part.done", i)
		buf = append(buf, `,"content_index":0,"part":{"type":"reasoning_text","text":`...)
		buf = jsonstr.AppendBytes(buf, it.text)
		buf = f.end(append(buf, '}'))
	case messageItem:
		buf = f.itemEvent(buf, "response.output_text.done", i)
		buf = append(buf, `,"content_index":0,"text":`...)
		buf = jsonstr.AppendBytes(buf, it.text)
		buf = f.end(append(buf, `,"logprobs":[]`...))
		buf = f.itemEvent(buf, "response.content_part.done", i)
		buf = append(buf, `,"content_index":0,"part":`...)
		buf = appendTextPart(buf, it.text)
		buf = f.end(buf)
	case callItem:
		buf = f.itemEvent(buf, "response.function_call_arguments.done", i)
		buf = append(buf, `,"name":`...)
		buf = jsonstr.Append(buf, it.name)
		buf = append(buf, `,"arguments":`...)
		buf = jsonstr.AppendBytes(buf, it.text)
		buf = f.end(buf)
	}
	it.status = status
	buf = f.event(buf, "response.output_item.done")
	buf = append(buf, `,"output_index":`...)
	buf = strconv.AppendInt(buf, int64(i), 10)
	buf = append(buf, `,"item":`...)
	buf = f.item(buf, it, true)
	return f.end(buf)
}

// relay writes the events of an upstream that speaks the API (one JSON
// object a line) with the gateway's sequence numbers. The response's
// own announcements are the gateway's (sent when the stream opened, with
// its id); its end is held for Done.
func (f *format) relay(buf []byte, raw string) []byte {
	for len(raw) > 0 {
		line, rest, _ := strings.Cut(raw, "\n")
		raw = rest
		typ := gjson.Get(line, "type").Str
		switch typ {
		case "response.created", "response.queued", "response.in_progress":
			continue
		case "response.completed", "response.incomplete":
			f.final = append(f.final[:0], gjson.Get(line, "response").Raw...)
			continue
		case "response.output_item.added", "response.output_item.done":
			f.keep(line, typ == "response.output_item.done")
		}
		if !f.lines {
			buf = append(buf, "event: "...)
			buf = append(buf, typ...)
			buf = append(buf, "\ndata: "...)
		}
		// The upstream's number replaced by the gateway's, the rest
		// as it came.
		if seq := gjson.Get(line, "sequence_number"); seq.Index > 0 {
			buf = append(buf, line[:seq.Index]...)
			buf = strconv.AppendInt(buf, int64(f.seq), 10)
			buf = append(buf, line[seq.Index+len(seq.Raw):]...)
		} else {
			buf = append(buf, `{"sequence_number":`...)
			buf = strconv.AppendInt(buf, int64(f.seq), 10)
			buf = append(buf, ',')
			buf = append(buf, line[1:]...)
		}
		f.seq++
		buf = append(buf, '\n')
		if !f.lines {
			buf = append(buf, '\n')
		}
	}
	return buf
}

// keep notes the output item of an output_item event: as it is when
// done, marked incomplete until then.
func (f *format) keep(line string, done bool) {
	i := gjson.Get(line, "output_index").Int()
	if i < 0 || i >= maxOutputItems {
		return
	}
	item := gjson.Get(line, "item").Raw
	if !done {
		item, _ = sjson.Set(item, "status", "incomplete")
	}
	for int64(len(f.out)) <= i {
		f.out = append(f.out, nil)
	}
	f.out[i] = append(f.out[i][:0], item...)
}

// finalObject is the relayed upstream's last response object as the
// gateway's: its id, and what the upstream was not told.
func (f *format) finalObject() []byte {
	b, err := sjson.SetBytes(f.final, "id", "resp_"+f.ref)
	if err == nil {
		b, err = sjson.SetBytes(b, "background", f.background)
	}
	if err == nil && f.prev != "" {
		b, err = sjson.SetBytes(b, "previous_response_id", f.prev)
	}
	if err != nil { // the upstream's object was checked to be JSON
		return f.final
	}
	return b
}

// Done ends a complete answer: response.completed, or response.incomplete
// when max_output_tokens or a content filter cut it.
func (f *format) Done(buf []byte, r *relay.Result) []byte {
	typ, status, reason := "response.completed", "completed", incompleteReason(r.FinishReason)
	if reason != "" {
		typ, status = "response.incomplete", "incomplete"
	}
	buf = f.close(buf, status)
	buf = f.event(buf, typ)
	buf = append(buf, `,"response":`...)
	n := len(buf)
	if f.native && len(f.final) > 0 {
		buf = append(buf, f.finalObject()...)
	} else {
		buf = f.response(buf, status, nil, reason, r)
	}
	f.saved(buf[n:])
	return f.end(buf)
}

// saved hands the final response object to save, if set.
func (f *format) saved(response []byte) {
	f.ended = true
	if f.save != nil {
		f.save(response)
	}
}

// abandoned keeps, if it is to be kept, a response whose client left
// before its end (no terminal event was written, there being no one to
// read it): cancelled, with what was generated by then, the item cut
// short marked incomplete.
func (f *format) abandoned() {
	if f.ended || f.save == nil {
		return
	}
	if f.open >= 0 {
		f.items[f.open].status = "incomplete"
		f.open = -1
	}
	f.saved(f.response(nil, "cancelled", &failure.Error{Code: failure.CodeClientClosed, Message: "the client closed the connection before the response was complete"}, "", nil))
}

// Failed ends any other stream: response.failed, with the error, and the
// items so far (the one cut short marked incomplete).
func (f *format) Failed(buf []byte, e *failure.Error) []byte {
	if f.open >= 0 {
		f.items[f.open].status = "incomplete"
		f.open = -1
	}
	status := "failed"
	if e.Code == failure.CodeCancelled {
		status = "cancelled" // POST /v1/responses/{id}/cancel
	}
	buf = f.event(buf, "response.failed")
	buf = append(buf, `,"response":`...)
	n := len(buf)
	buf = f.response(buf, status, e, "", nil)
	f.saved(buf[n:])
	return f.end(buf)
}

// Terminal reports whether a line of a background response's log ends
// it, and how.
func (f *format) Terminal(line []byte) (outcome.End, bool) {
	switch string(resumable.EventType(line)) {
	case "response.completed", "response.incomplete":
		return outcome.Done, true
	case "response.failed":
		return outcome.StreamError, true
	}
	return outcome.None, false
}

// incompleteReason is why a finish reason leaves a response incomplete,
// or "" when it is complete.
func incompleteReason(finish string) string {
	switch finish {
	case "length":
		return "max_output_tokens"
	case "content_filter":
		return "content_filter"
	}
	return ""
}

// appendUsage appends usage as the Responses API counts it.
func appendUsage(buf []byte, u *providers.Usage) []byte {
	buf = append(buf, `{"input_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.PromptTokens), 10)
	buf = append(buf, `,"input_tokens_details":{"cached_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.CachedTokens), 10)
	buf = append(buf, `},"output_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.CompletionTokens), 10)
	buf = append(buf, `,"output_tokens_details":{"reasoning_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.ReasoningTokens), 10)
	buf = append(buf, `},"total_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.TotalTokens), 10)
	return append(buf, '}')
}
