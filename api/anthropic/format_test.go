package anthropic

import (
	"strings"
	"testing"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
)

// render runs chunks through a format, then Done with res (or Failed
// with e), and returns the wire.
func render(chunks []providers.Chunk, res *relay.Result, e *failure.Error) string {
	f := newFormat("msg_1", "claude", 7)
	buf := f.Opened(nil, "p")
	for i := range chunks {
		buf = f.Chunk(buf, &chunks[i])
	}
	if e != nil {
		return string(f.Failed(buf, e))
	}
	return string(f.Done(buf, res))
}

const (
	start     = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":7,\"output_tokens\":0}}}\n\n"
	blockStop = "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":%d}\n\n"
)

func TestFormatTranslated(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []providers.Chunk
		res    relay.Result
		err    *failure.Error
		want   []string
	}{
		{name: "empty answer", res: relay.Result{FinishReason: "stop", Usage: providers.Usage{PromptTokens: 3}}, want: []string{start,
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":0}}\n\n",
			stopFrame}},
		{name: "thinking, signature, text, estimated usage",
			chunks: []providers.Chunk{{}, {Reasoning: "a"}, {Reasoning: "b"}, {ReasoningSignature: "sig"}, {Content: "x\n\"y\""}},
			res:    relay.Result{FinishReason: "length", UsageEstimated: true, Usage: providers.Usage{PromptTokens: 10, CompletionTokens: 4, CachedTokens: 6}},
			want: []string{start,
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"a\"}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"b\"}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}}\n\n",
				strings.Replace(blockStop, "%d", "0", 1),
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\\n\\\"y\\\"\"}}\n\n",
				strings.Replace(blockStop, "%d", "1", 1),
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":4,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":6,\"output_tokens\":4},\"usage_estimated\":true}\n\n",
				stopFrame}},
		{name: "redacted thinking, then two tool calls",
			chunks: []providers.Chunk{{RedactedReasoning: "enc"},
				{ToolCalls: []providers.ToolCallDelta{{Index: 0, ID: "c1", Name: "f", Arguments: `{"a"`}}},
				{ToolCalls: []providers.ToolCallDelta{{Index: 0, Arguments: `:1}`}}},
				{ToolCalls: []providers.ToolCallDelta{{Index: 1, ID: "c2", Name: "g"}}}},
			res: relay.Result{FinishReason: "tool_calls"},
			want: []string{start,
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"enc\"}}\n\n",
				strings.Replace(blockStop, "%d", "0", 1),
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"f\",\"input\":{}}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\"\"}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\":1}\"}}\n\n",
				strings.Replace(blockStop, "%d", "1", 1),
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"c2\",\"name\":\"g\",\"input\":{}}}\n\n",
				strings.Replace(blockStop, "%d", "2", 1),
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":0}}\n\n",
				stopFrame}},
		{name: "failure: an error event, no stop", chunks: []providers.Chunk{{Content: "par"}},
			err: &failure.Error{Status: 504, Code: "upstream_idle_timeout", Message: "silent"},
			want: []string{start,
				"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
				"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"par\"}}\n\n",
				"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"silent\"}}\n\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := render(tc.chunks, &tc.res, tc.err)
			if want := strings.Join(tc.want, ""); got != want {
				t.Errorf("wire\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestFormatRelayed: an Anthropic upstream's frames go out as they came;
// the format adds only message_stop, and an error event on failure.
func TestFormatRelayed(t *testing.T) {
	raw := "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: content_block_delta\ndata: {}\n\n"
	chunks := []providers.Chunk{{Content: "x", Raw: raw}, {FinishReason: "stop", Raw: "event: message_delta\ndata: {}\n\n"}}
	if got, want := render(chunks, &relay.Result{FinishReason: "stop"}, nil), raw+"event: message_delta\ndata: {}\n\n"+stopFrame; got != want {
		t.Errorf("wire\n%s\nwant\n%s", got, want)
	}
	got := render(chunks[:1], nil, &failure.Error{Status: 502, Code: "overloaded_error", Message: "Overloaded"})
	if want := raw + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"; got != want {
		t.Errorf("wire\n%s\nwant\n%s", got, want)
	}
}

// TestFormatAllocatesNothingPerToken: a text delta is rendered into the
// relay's buffer without an allocation.
func TestFormatAllocatesNothingPerToken(t *testing.T) {
	f := newFormat("msg_1", "claude", 7)
	c := providers.Chunk{Content: " token"}
	buf := f.Chunk(make([]byte, 0, 4096), &c)
	if n := testing.AllocsPerRun(1000, func() { buf = f.Chunk(buf[:0], &c) }); n != 0 {
		t.Errorf("%v allocations per text delta", n)
	}
}

func BenchmarkMessagesChunkFrame(b *testing.B) {
	f := newFormat("msg_1", "claude", 7)
	c := providers.Chunk{Content: " token"}
	buf := f.Chunk(make([]byte, 0, 512), &c)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Chunk(buf[:0], &c)
	}
}
