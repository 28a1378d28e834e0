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
