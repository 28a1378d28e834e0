package openai

import (
	"net/http"
	"strings"
	"testing"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/internal/apitest"
	"github.com/streamgate/gateway/providers"
)

// FuzzDecodeRequest decodes arbitrary bodies as POST /v1/chat/completions
// does: no panic; refusals are 4xx in the client's terms; accepted
// requests are bounded.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:x"}}]}]}`,
		`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"1"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"auto"}`,
		`{"model":"m","messages":[{"role":"user","content":5}]}`, `{"model":"m","n":2,"messages":[]}`, `{"max_completion_tokens":-1}`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		var cr chatRequest
		var req *providers.Request
		e := api.DecodeJSON(r, &cr, false)
		if e == nil {
			req, e = cr.ToProvider()
		}
		apitest.CheckDecoded(t, body, req, e, api.MaxOutputTokens, 4, "openai.")
	})
}
