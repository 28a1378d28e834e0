package native

import (
	"net/http"
	"strings"
	"testing"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/internal/apitest"
	"github.com/streamgate/gateway/providers"
)

// FuzzDecodeRequest decodes arbitrary bodies as POST /v1/stream does.
// Whatever arrives: no panic; a refusal is a 4xx in the client's terms
// (no Go type names); an accepted request has messages and bounded
// values.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","prompt":"hi"}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"system":"s","max_tokens":5,"temperature":1,"stop":["a"]}`,
		`{"model":"m","prompt":"x","max_tokens":9223372036854775807}`,
		`{"model":5}`, `[1,2]`, `{"model":"m","prompt":"x","temprature":1}`, `{"model":"m","stop":"x","prompt":"y"}`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, _ := http.NewRequest("POST", "/", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		var sr streamRequest
		var req *providers.Request
		e := api.DecodeJSON(r, &sr, true)
		if e == nil {
			req, e = sr.ToProvider()
		}
		apitest.CheckDecoded(t, body, req, e, api.MaxOutputTokens, 4, "native.")
	})
}
