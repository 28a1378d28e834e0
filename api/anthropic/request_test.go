package anthropic

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/internal/apitest"
	"github.com/streamgate/gateway/providers"
)

func decode(t testing.TB, body string) (*messagesRequest, *providers.Request, string) {
	r, _ := http.NewRequest("POST", "/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	var mr messagesRequest
	e := api.DecodeJSON(r, &mr, false)
	var req *providers.Request
	if e == nil {
		req, e = mr.ToProvider()
	}
	if e != nil {
		return &mr, nil, e.Param + ": " + e.Message
	}
	return &mr, req, ""
}

// TestOnlyNative: what a translation cannot carry is named, in the API's
// words, for a provider that would have to translate it to refuse.
func TestOnlyNative(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		body string
		only []string
	}{
		{`{"model":"m","max_tokens":5,` + msgs + `}`, nil},
		{`{"model":"m","max_tokens":5,"top_k":3,` + msgs + `}`, []string{"top_k"}},
		{`{"model":"m","max_tokens":5,"service_tier":"auto","container":"c",` + msgs + `}`, []string{"container", "service_tier"}},
		{`{"model":"m","max_tokens":5,"tools":[{"type":"web_search_20250305","name":"web_search"}],` + msgs + `}`, []string{"tools.0 (the web_search_20250305 tool)"}},
		{`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"}},{"type":"text","text":"sum up"}]}]}`,
			[]string{"messages.0.content.0 (a document block)"}},
		{`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}`,
			[]string{`messages.0.content.0 (an image of source type "file")`}},
		{`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA"}}]}]}]}`,
			[]string{"messages.0.content.0.content.0 (a image block in a tool result)"}},
		{`{"model":"m","max_tokens":5,"thinking":{"type":"adaptive"},` + msgs + `}`, []string{`thinking.type "adaptive"`}},
	} {
		_, req, e := decode(t, tc.body)
		if e != "" {
			t.Errorf("%s: refused: %s", tc.body, e)
			continue
		}
		if !reflect.DeepEqual(req.Native.Only, tc.only) {
			t.Errorf("%s: only %q, want %q", tc.body, req.Native.Only, tc.only)
		}
	}
}

// TestTranslation: a conversation with every block the gateway translates
// becomes the engine's messages in order.
func TestTranslation(t *testing.T) {
	_, req, e := decode(t, `{"model":"m","max_tokens":4000,"system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],
	"stop_sequences":["END"],"temperature":0.5,"metadata":{"user_id":"u1"},"thinking":{"type":"enabled","budget_tokens":3000},
	"tool_choice":{"type":"tool","name":"get","disable_parallel_tool_use":true},
	"tools":[{"name":"get","description":"d","input_schema":{"type":"object"}}],
	"messages":[
	 {"role":"user","content":[{"type":"text","text":"look"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]},
	 {"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"sig"},{"type":"text","text":"calling"},{"type":"tool_use","id":"t1","name":"get","input":{"q":1}}]},
	 {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"boom","is_error":true},{"type":"text","text":"and?"}]}]}`)
	if e != "" {
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
			s += "+" + tc.ID + " " + tc.Function.Name + tc.Function.Arguments
		}
		if m.Reasoning != "" {
			s += "+thinking " + m.Reasoning + " " + m.ReasoningSignature
		}
		if m.ToolCallID != "" {
			s += "+for " + m.ToolCallID
		}
		got = append(got, s)
	}
	want := []string{"system:be brief", "user:look+data:image/png;base64,AA==", `assistant:calling+t1 get{"q":1}+thinking hm sig`, "tool:Error: boom+for t1", "user:and?"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("messages\n%q\nwant\n%q", got, want)
	}
	if req.MaxTokens != 4000 || *req.Temperature != 0.5 || req.User != "u1" || req.Stop[0] != "END" || req.ThinkingBudget != 3000 || req.ReasoningEffort != "medium" ||
		string(req.ToolChoice) != `{"function":{"name":"get"},"type":"function"}` || *req.ParallelToolCalls || len(req.Tools) != 1 || len(req.Native.Only) != 0 {
		t.Errorf("request %+v", req)
	}
}

// TestRefusals: what the API itself refuses is refused in its words.
func TestRefusals(t *testing.T) {
	for body, want := range map[string]string{
		`{"max_tokens":5,"messages":[]}`:                                                                                           "model: model: Field required",
		`{"model":"m","messages":[{"role":"user","content":"x"}]}`:                                                                 "max_tokens: max_tokens: Field required",
		`{"model":"m","max_tokens":0,"messages":[]}`:                                                                               "max_tokens: max_tokens: must be between 1",
		`{"model":"m","max_tokens":5,"temperature":1.5,"messages":[]}`:                                                             "temperature: temperature: must be between 0 and 1",
		`{"model":"m","max_tokens":5,"messages":[]}`:                                                                               "messages: messages: at least one message",
		`{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}`:                                                "messages.0.role: messages.0.role: must be user or assistant",
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":7}]}`:                                                    "messages.0.content: messages.0.content: must be a string",
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[]},{"role":"assistant","content":"a"}]}`:                "messages.0.content: messages.0: all messages must have non-empty content",
		`{"model":"m","max_tokens":5,"messages":[{"role":"user","Content":[]}]}`:                                                   "messages.0.content: messages.0: all messages must have non-empty content",
		`{"model":"m","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":10},"messages":[{"role":"user","content":"x"}]}`: "thinking.budget_tokens: thinking.budget_tokens: must be at least 1024",
		`{"model":"m","max_tokens":5,"tool_choice":{"type":"some"},"messages":[{"role":"user","content":"x"}]}`:                    "tool_choice.type: tool_choice.type: must be auto, any, tool or none",
		`{"model":"m","max_tokens":5,"tools":[{"name":"f"}],"messages":[{"role":"user","content":"x"}]}`:                           "tools.0.input_schema: tools.0.input_schema: Field required",
		`{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","name":"f"}]}]}`:                "messages.0.content.0: messages.0.content.0: a tool_use block needs an id and a name",
	} {
		if _, _, got := decode(t, body); !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %q…", body, got, want)
		}
	}
}

// FuzzDecodeRequest decodes arbitrary bodies as POST /v1/messages does:
// no panic; refusals are 4xx in the client's terms; accepted requests are
// bounded and carry their body whole.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","max_tokens":5,"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral"}},{"type":"image","source":{"type":"url","url":"https://x"}}]}]}`,
		`{"model":"m","max_tokens":9000,"thinking":{"type":"enabled","budget_tokens":2000},"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"tool_use","id":"i","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"i","content":[{"type":"text","text":"r"}]}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"}}`,
		`{"model":"m","max_tokens":5,"top_k":-1,"messages":[]}`, `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":""}]}]}`, `null`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		var mr messagesRequest
		var req *providers.Request
		e := api.DecodeJSON(r, &mr, false)
		if e == nil {
			req, e = mr.ToProvider()
		}
		if e == nil && string(req.Native.Body) != string(bytes.TrimSpace(body)) {
			t.Fatalf("native body %q, sent %q", req.Native.Body, body)
		}
		apitest.CheckDecoded(t, body, req, e, api.MaxOutputTokens, maxStopSequences, "anthropic.")
	})
}

// BenchmarkDecodeRequest decodes and translates a short Messages request,
// the per-request cost of the dialect.
func BenchmarkDecodeRequest(b *testing.B) {
	body := `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],` +
		`"tools":[{"name":"Read","description":"Reads a file","input_schema":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}}],` +
		`"metadata":{"user_id":"u"},"messages":[{"role":"user","content":[{"type":"text","text":"benchmark [mock tokens=8]"}]}]}`
	b.ReportAllocs()
	for b.Loop() {
		if _, _, e := decode(b, body); e != "" {
			b.Fatal(e)
		}
	}
}
