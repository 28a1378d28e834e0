package responses

import (
	"encoding/json"
	"testing"
)

// TestEchoRepeatsTheRequestsSettings: the response object repeats what
// the request set, as OpenAI's does, and the API's defaults for the rest.
func TestEchoRepeatsTheRequestsSettings(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"defaults", `{"model":"m","input":"hi"}`, `,"instructions":null,"max_output_tokens":null,"metadata":{},"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","user":null`},
		{"every setting", `{"model":"m","input":"hi","instructions":"Be <brief> & kind","max_output_tokens":64,
			"metadata":{"b":"2","a":"1"},"parallel_tool_calls":false,"previous_response_id":"resp_x",
			"reasoning":{"effort":"low","summary":"auto"},"store":false,"temperature":0.7,
			"text":{"format":{"type":"json_object"}},"tool_choice": {"type" : "function","name":"f"},
			"tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],"top_p":0.9,"user":"u-1"}`, `,"instructions":"Be \u003cbrief\u003e \u0026 kind","max_output_tokens":64,"metadata":{"a":"1","b":"2"},"parallel_tool_calls":false,"previous_response_id":"resp_x","reasoning":{"effort":"low","summary":"auto"},"store":false,"temperature":0.7,"text":{"format":{"type":"json_object","name":"","description":"","schema":null,"strict":null},"verbosity":""},"tool_choice":{"type":"function","name":"f"},"tools":[{"type":"function","name":"f","description":"","parameters":{"type":"object"},"strict":null}],"top_p":0.9,"truncation":"disabled","user":"u-1"`},
		{"empty metadata, effort only", `{"model":"m","input":"hi","metadata":{},"reasoning":{"effort":"high"},"tool_choice":null}`, `,"instructions":null,"max_output_tokens":null,"metadata":{},"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":"high","summary":null},"store":true,"temperature":null,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":null,"truncation":"disabled","user":null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r createRequest
			if err := json.Unmarshal([]byte(tc.body), &r); err != nil {
				t.Fatal(err)
			}
			if got := string(r.echo()); got != tc.want {
				t.Errorf("echo\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}
