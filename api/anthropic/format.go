package anthropic

import (
	"strconv"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
)

// pingFrame is the heartbeat: Anthropic's ping event (shared, read only).
var pingFrame = []byte("event: ping\ndata: {\"type\": \"ping\"}\n\n")

// stopFrame ends a complete answer, and only a complete one.
const stopFrame = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

// kind is the kind of the content block open in a translated stream.
type kind uint8

const (
	none kind = iota
	textBlock
	thinkingBlock
	redactedBlock
	toolBlock
)

// format is the Messages stream: message_start, content blocks (start,
// deltas, stop), message_delta, and message_stop after a complete answer
// only; an error event otherwise.
//
// From an Anthropic upstream (a Native request) the upstream's events
// are relayed as they came (Chunk.Raw), and only message_stop and error
// are the format's own. From any other upstream the chunks are
// translated into the same sequence of events.
type format struct {
	// start is the message_start frame of a translated stream.
	start   []byte
	started bool
	native  bool

	open  kind
	index int // the open block's index; the next one's when none is open
	// toolBlocks maps an upstream tool call's index to its block.
	toolBlocks []int
}

var (
	_ relay.Format      = (*format)(nil)
	_ relay.Heartbeater = (*format)(nil)
)

// newFormat returns the format of a stream with message id, answering
// model, whose input is estimated at inputTokens until the upstream says.
func newFormat(id, model string, inputTokens int) *format {
	b := make([]byte, 0, 256)
	b = append(b, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"...)
	b = jsonstr.Append(b, id)
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = jsonstr.Append(b, model)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(inputTokens), 10)
	b = append(b, `,"output_tokens":0}}}`+"\n\n"...)
	return &format{start: b}
}

func (f *format) Heartbeat() []byte { return pingFrame }

// Opened writes nothing: whether the stream is relayed or translated is
// known at its first chunk.
func (f *format) Opened(buf []byte, _ string) []byte { return buf }

func (f *format) Chunk(buf []byte, c *providers.Chunk) []byte {
	if c.Raw != "" {
		f.started, f.native = true, true
		return append(buf, c.Raw...)
	}
	if f.native {
		return buf
	}
	buf = f.begin(buf)
	if c.Reasoning != "" {
		buf = f.ensure(buf, thinkingBlock)
		buf = f.delta(buf, `{"type":"thinking_delta","thinking":`, c.Reasoning)
	}
	if c.ReasoningSignature != "" {
		buf = f.ensure(buf, thinkingBlock)
		buf = f.delta(buf, `{"type":"signature_delta","signature":`, c.ReasoningSignature)
	}
	if c.RedactedReasoning != "" {
		buf = f.close(buf)
		buf = f.startBlock(buf, `{"type":"redacted_thinking","data":`, c.RedactedReasoning, redactedBlock)
		buf = f.close(buf)
	}
	if c.Content != "" {
		buf = f.ensure(buf, textBlock)
		buf = f.delta(buf, `{"type":"text_delta","text":`, c.Content)
	}
	for i := range c.ToolCalls {
		buf = f.toolCall(buf, &c.ToolCalls[i])
	}
	return buf
}

// begin writes message_start, once.
func (f *format) begin(buf []byte) []byte {
	if f.started {
		return buf
	}
	f.started = true
	return append(buf, f.start...)
}

// ensure opens a block of kind k unless one is open.
func (f *format) ensure(buf []byte, k kind) []byte {
	if f.open == k {
		return buf
	}
	buf = f.close(buf)
	switch k {
	case textBlock:
		buf = f.startBlock(buf, `{"type":"text","text":""`, "", k)
	case thinkingBlock:
		buf = f.startBlock(buf, `{"type":"thinking","thinking":"","signature":""`, "", k)
	}
	return buf
}

// startBlock writes content_block_start of a block whose JSON is head
// followed, when value is set, by value as a string, and marks it open as
// k.
func (f *format) startBlock(buf []byte, head, value string, k kind) []byte {
	buf = append(buf, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":"...)
	buf = strconv.AppendInt(buf, int64(f.index), 10)
	buf = append(buf, `,"content_block":`...)
	buf = append(buf, head...)
	if value != "" {
		buf = jsonstr.Append(buf, value)
	}
	buf = append(buf, "}}\n\n"...)
	f.open = k
	return buf
}

// delta writes a content_block_delta to the open block: head, then s as
// a JSON string.
func (f *format) delta(buf []byte, head, s string) []byte {
	return f.deltaAt(buf, f.index, head, s)
}

func (f *format) deltaAt(buf []byte, index int, head, s string) []byte {
	buf = append(buf, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":"...)
	buf = strconv.AppendInt(buf, int64(index), 10)
	buf = append(buf, `,"delta":`...)
	buf = append(buf, head...)
	buf = jsonstr.Append(buf, s)
	return append(buf, "}}\n\n"...)
}

// close writes content_block_stop of the open block, if any.
func (f *format) close(buf []byte) []byte {
	if f.open == none {
		return buf
	}
	buf = append(buf, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":"...)
	buf = strconv.AppendInt(buf, int64(f.index), 10)
	buf = append(buf, "}\n\n"...)
	f.open = none
	f.index++
	return buf
}

// toolCall translates a tool-call delta: the first of a call (it has an
// id or a name) opens a tool_use block, and arguments are input_json
// deltas of the call's block.
func (f *format) toolCall(buf []byte, d *providers.ToolCallDelta) []byte {
	for len(f.toolBlocks) <= d.Index {
		f.toolBlocks = append(f.toolBlocks, -1)
	}
	block := f.toolBlocks[d.Index]
	if block < 0 {
		buf = f.close(buf)
		buf = append(buf, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":"...)
		buf = strconv.AppendInt(buf, int64(f.index), 10)
		buf = append(buf, `,"content_block":{"type":"tool_use","id":`...)
		buf = jsonstr.Append(buf, d.ID)
		buf = append(buf, `,"name":`...)
		buf = jsonstr.Append(buf, d.Name)
		buf = append(buf, `,"input":{}}}`+"\n\n"...)
		f.open, block = toolBlock, f.index
		f.toolBlocks[d.Index] = block
	}
	if d.Arguments == "" {
		return buf
	}
	// Calls stream one after another; should an upstream interleave
	// them, a delta goes to its own call's block, as an accumulating
	// client (the SDKs) reads it.
	return f.deltaAt(buf, block, `{"type":"input_json_delta","partial_json":`, d.Arguments)
}

// Done closes the open block and sends message_delta (the stop reason and
// the usage) and message_stop. A relayed stream has sent its own
// message_delta.
func (f *format) Done(buf []byte, r *relay.Result) []byte {
	if !f.native {
		buf = f.begin(buf)
		buf = f.close(buf)
		buf = append(buf, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"...)
		buf = jsonstr.Append(buf, stopReason(r.FinishReason))
		buf = append(buf, `,"stop_sequence":null},"usage":`...)
		buf = appendUsage(buf, &r.Usage)
		if r.UsageEstimated {
			buf = append(buf, `,"usage_estimated":true`...)
		}
		buf = append(buf, "}\n\n"...)
	}
	return append(buf, stopFrame...)
}

// Failed ends the stream with an error event, as Anthropic's streams end
// when they fail: no message_stop follows.
func (f *format) Failed(buf []byte, e *failure.Error) []byte {
	buf = append(buf, "event: error\ndata: "...)
	buf = appendError(buf, e, "")
	return append(buf, "\n\n"...)
}

// stopReason maps a finish reason onto Anthropic's stop_reason.
func stopReason(r string) string {
	switch r {
	case "stop", "":
		return "end_turn"
	case "length":
		return "max_tokens"
	case "tool_calls":
		return "tool_use"
	case "content_filter":
		return "refusal"
	}
	return r // pause_turn, and Anthropic's own reasons
}

// appendUsage appends usage as Anthropic counts it: input_tokens without
// the tokens read from or written to the prompt cache, which are counted
// apart.
func appendUsage(buf []byte, u *providers.Usage) []byte {
	in := max(0, u.PromptTokens-u.CachedTokens-u.CacheWriteTokens)
	buf = append(buf, `{"input_tokens":`...)
	buf = strconv.AppendInt(buf, int64(in), 10)
	buf = append(buf, `,"cache_creation_input_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.CacheWriteTokens), 10)
	buf = append(buf, `,"cache_read_input_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.CachedTokens), 10)
	buf = append(buf, `,"output_tokens":`...)
	buf = strconv.AppendInt(buf, int64(u.CompletionTokens), 10)
	return append(buf, '}')
}
