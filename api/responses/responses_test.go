package responses

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/apitest"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
)

func decode(body string) (*providers.Request, *failure.Error) {
	r, _ := http.NewRequest("POST", "/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	var cr createRequest
	if e := api.DecodeJSON(r, &cr, false); e != nil {
		return nil, e
	}
	return cr.ToProvider()
}

// TestInputTranslated: items become chat messages in order, function
// calls (and the reasoning before them) joining one assistant message.
func TestInputTranslated(t *testing.T) {
	req, e := decode(`{"model":"m","instructions":"be brief","input":[
	 {"role":"user","content":[{"type":"input_text","text":"look"},{"type":"input_image","image_url":"https://x/i.png"}]},
	 {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"thought"}]},
	 {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
	 {"type":"function_call","call_id":"c2","name":"g","arguments":"{\"a\":1}"},
	 {"type":"function_call_output","call_id":"c1","output":"one"},
	 {"type":"function_call_output","call_id":"c2","output":[{"type":"input_text","text":"two"}]},
	 {"type":"message","role":"assistant","content":[{"type":"output_text","text":"done"}]}],
	 "tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"tool_choice":{"type":"function","name":"f"},
	 "text":{"format":{"type":"json_schema","name":"n","schema":{"type":"object"},"strict":true}},"reasoning":{"effort":"low"},"max_output_tokens":50}`)
	if e != nil {
		t.Fatal(e)
	}
	var got []string
	for _, m := range req.Messages {
		s := m.Role + ":" + m.Text()
		for _, p := range m.Parts {
			if p.ImageURL != nil {
				s += "+" + p.ImageURL.URL
			}
		}
		for _, tc := range m.ToolCalls {
			s += "+" + tc.ID + tc.Function.Name + tc.Function.Arguments
		}
		if m.Reasoning != "" {
			s += "+thinking " + m.Reasoning
		}
		if m.ToolCallID != "" {
			s += "+for " + m.ToolCallID
		}
		got = append(got, s)
	}
	want := []string{"system:be brief", "user:look+https://x/i.png", `assistant:+c1f{}+c2g{"a":1}+thinking thought`, "tool:one+for c1", "tool:two+for c2", "assistant:done"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages\n%q\nwant\n%q", got, want)
	}
	if req.MaxTokens != 50 || req.ReasoningEffort != "low" || string(req.ToolChoice) != `{"function":{"name":"f"},"type":"function"}` ||
		!strings.Contains(string(req.ResponseFormat), `"json_schema":{"name":"n","schema":{"type":"object"},"strict":true}`) || len(req.Tools) != 1 {
		t.Errorf("request %+v (response_format %s)", req, req.ResponseFormat)
	}
}

// TestFormatAllocatesNothingPerToken: a text delta of an open message is
// rendered without an allocation, its text kept in storage that grows.
func TestFormatAllocatesNothingPerToken(t *testing.T) {
	f := newFormat("r", "m", 1, nil)
	c := providers.Chunk{Content: " token"}
	buf := f.Chunk(make([]byte, 0, 4096), &c)
	f.items[0].text = make([]byte, 0, 1<<20)
	if n := testing.AllocsPerRun(1000, func() { buf = f.Chunk(buf[:0], &c) }); n != 0 {
		t.Errorf("%v allocations per text delta", n)
	}
}

// TestFailedNeverCompletes: a stream that fails ends with response.failed
// only; Done with a length finish is response.incomplete.
func TestFailedNeverCompletes(t *testing.T) {
	f := newFormat("r", "m", 1, nil)
	buf := f.Opened(nil, "p")
	buf = f.Chunk(buf, &providers.Chunk{Content: "x"})
	buf = f.Failed(buf, &failure.Error{Code: "upstream_truncated", Message: "cut"})
	if bytes.Contains(buf, []byte("response.completed")) || !bytes.HasSuffix(bytes.TrimSpace(buf), []byte(`"usage":null}}`)) ||
		!bytes.Contains(buf, []byte(`"status":"failed"`)) || !bytes.Contains(buf, []byte(`"error":{"code":"upstream_truncated","message":"cut"}`)) {
		t.Errorf("wire\n%s", buf)
	}
	g := newFormat("r", "m", 1, nil)
	out := g.Done(g.Chunk(nil, &providers.Chunk{Content: "x"}), &relay.Result{FinishReason: "length"})
	if !bytes.Contains(out, []byte("event: response.incomplete")) || !bytes.Contains(out, []byte(`"incomplete_details":{"reason":"max_output_tokens"}`)) {
		t.Errorf("wire\n%s", out)
	}
}

// TestRelayRenumbers: a relayed upstream's events go out as they came
// but for their sequence numbers, which continue the gateway's own
// (response.created and in_progress); the upstream's announcements are
// dropped, its final object is held for Done and carries the gateway's
// id; in lines mode (a background log) the same JSON goes one a line.
func TestRelayRenumbers(t *testing.T) {
	raw := `{"type":"response.created","sequence_number":0,"response":{"id":"resp_up"}}` + "\n" +
		`{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_up","type":"message","status":"in_progress","content":[]}}` + "\n" +
		`{"type":"response.output_text.delta","item_id":"msg_up","output_index":0,"delta":"hi \"sequence_number\":9"}` + "\n"
	end := `{"type":"response.completed","sequence_number":9,"response":{"id":"resp_up","status":"completed","background":false,"output":[]}}` + "\n"
	for _, lines := range []bool{false, true} {
		f := newFormat("r", "m", 1, nil)
		f.lines, f.prev = lines, "resp_before"
		buf := f.Opened(nil, "p")
		buf = f.Chunk(buf, &providers.Chunk{Content: "hi", Raw: raw})
		buf = f.Chunk(buf, &providers.Chunk{FinishReason: "stop", Raw: end})
		if bytes.Contains(buf, []byte("resp_up")) || bytes.Contains(buf, []byte("response.completed")) {
			t.Errorf("before Done:\n%s", buf)
		}
		buf = f.Done(buf, &relay.Result{FinishReason: "stop"})
		want := []string{
			`{"type":"response.output_item.added","sequence_number":2,"output_index":0,`,
			`{"sequence_number":3,"type":"response.output_text.delta","item_id":"msg_up","output_index":0,"delta":"hi \"sequence_number\":9"}`,
			`{"type":"response.completed","sequence_number":4,"response":{"id":"resp_r","status":"completed","background":false,"output":[],"previous_response_id":"resp_before"}}`,
		}
		for _, w := range want {
			if !bytes.Contains(buf, []byte(w)) {
				t.Errorf("lines=%v: no %s in\n%s", lines, w, buf)
			}
		}
		if got := bytes.Contains(buf, []byte("event: ")); got == lines {
			t.Errorf("lines=%v, framed as SSE: %v", lines, got)
		}
	}
}

// TestRelayFailedKeepsItems: a relayed response that fails ends with the
// gateway's response.failed, whose output holds the items done and, marked
// incomplete, the one cut short.
func TestRelayFailedKeepsItems(t *testing.T) {
	f := newFormat("r", "m", 1, nil)
	buf := f.Chunk(nil, &providers.Chunk{Content: "x", Raw: `{"type":"response.output_item.done","sequence_number":1,"output_index":0,"item":{"id":"ws","type":"web_search_call","status":"completed"}}` + "\n" +
		`{"type":"response.output_item.added","sequence_number":2,"output_index":1,"item":{"id":"msg","type":"message","status":"in_progress","content":[]}}` + "\n"})
	buf = f.Failed(buf, &failure.Error{Code: "upstream_truncated", Message: "cut"})
	if !bytes.Contains(buf, []byte(`"output":[{"id":"ws","type":"web_search_call","status":"completed"},{"id":"msg","type":"message","status":"incomplete","content":[]}]`)) ||
		bytes.Count(buf, []byte("event: response.failed")) != 1 {
		t.Errorf("wire\n%s", buf)
	}
}

// FuzzDecodeRequest decodes arbitrary bodies as POST /v1/responses does:
// no panic; refusals are 4xx in the client's terms; accepted requests are
// bounded.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","input":"hi","stream":true}`,
		`{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"a"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"x"}]}`,
		`{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":"required","text":{"format":{"type":"json_object"}}}`,
		`{"model":"m","input":[{"type":"reasoning","summary":[]}]}`, `{"model":"m","input":{}}`, `null`, `{"model":"m","input":"x","max_output_tokens":-1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, e := decode(string(body))
		apitest.CheckDecoded(t, body, req, e, api.MaxOutputTokens, 4, "responses.")
	})
}

// relayedDelta is an upstream's text delta as OpenAI sends it.
const relayedDelta = `{"type":"response.output_text.delta","sequence_number":41,"item_id":"msg_68f0a1b5cc2c8190b4f6d8fa02c4e6f8","output_index":2,"content_index":0,"delta":" token","logprobs":[],"obfuscation":"Qx0aPz"}` + "\n"

// TestRelayAllocatesNothingPerToken: a relayed delta is renumbered and
// framed without an allocation.
func TestRelayAllocatesNothingPerToken(t *testing.T) {
	f := newFormat("r", "m", 1, nil)
	c := providers.Chunk{Content: " token", Raw: relayedDelta}
	buf := f.Chunk(make([]byte, 0, 4096), &c)
	if n := testing.AllocsPerRun(1000, func() { buf = f.Chunk(buf[:0], &c) }); n != 0 {
		t.Errorf("%v allocations per relayed delta", n)
	}
}

// BenchmarkResponsesChunkFrame is the per-token cost of each way a text
// delta goes out: translated from a chunk, or relayed from an upstream
// that speaks the API.
func BenchmarkResponsesChunkFrame(b *testing.B) {
	for _, tc := range []struct {
		name string
		c    providers.Chunk
	}{
		{"translated", providers.Chunk{Content: " token"}},
		{"relayed", providers.Chunk{Content: " token", Raw: relayedDelta}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFormat("r", "m", 1, nil)
			buf := f.Chunk(make([]byte, 0, 4096), &tc.c)
			if f.open >= 0 {
				f.items[f.open].text = make([]byte, 0, 64<<20)
			}
			b.ReportAllocs()
			for b.Loop() {
				buf = f.Chunk(buf[:0], &tc.c)
			}
		})
	}
}
