package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestBadInput(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	big := `{"model":"mock-gpt","prompt":"` + strings.Repeat("x", 5000) + `"}`
	for _, tc := range []struct {
		name, method, path, contentType, body string
		chunked                               bool
		status                                int
		code                                  string
	}{
		{"malformed JSON", "POST", "/v1/stream", "application/json", `{"model":`, false, 400, "invalid_json"},
		{"not an object", "POST", "/v1/stream", "application/json", `[1,2]`, false, 400, "invalid_type"},
		{"empty body", "POST", "/v1/stream", "application/json", ``, false, 400, "invalid_json"},
		{"trailing data", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"x"} {}`, false, 400, "invalid_request"},
		{"missing model", "POST", "/v1/stream", "application/json", `{"prompt":"x"}`, false, 400, "missing_model"},
		{"missing messages", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt"}`, false, 400, "missing_messages"},
		{"prompt and messages", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"x","messages":[{"role":"user","content":"y"}]}`, false, 400, "invalid_request"},
		{"unknown field", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"x","temprature":1}`, false, 400, "invalid_request"},
		{"wrong field type", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":3}`, false, 400, "invalid_type"},
		{"bad role", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","messages":[{"role":"robot","content":"y"}]}`, false, 400, "invalid_value"},
		{"temperature out of range", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"x","temperature":3}`, false, 400, "invalid_value"},
		{"max_tokens zero", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"x","max_tokens":0}`, false, 400, "invalid_value"},
		{"too many stops", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"x","stop":["a","b","c","d","e"]}`, false, 400, "invalid_value"},
		{"unknown model", "POST", "/v1/stream", "application/json", `{"model":"gpt-9","prompt":"x"}`, false, 404, "model_not_found"},
		{"body too large", "POST", "/v1/stream", "application/json", big, false, 413, "request_too_large"},
		{"body too large, chunked", "POST", "/v1/stream", "application/json", big, true, 413, "request_too_large"},
		{"wrong content type", "POST", "/v1/stream", "text/plain", `{"model":"mock-gpt","prompt":"x"}`, false, 415, "unsupported_media_type"},
		{"form content type", "POST", "/v1/chat/completions", "application/x-www-form-urlencoded", `{"model":"mock-gpt"}`, false, 415, "unsupported_media_type"},
		{"chat malformed JSON", "POST", "/v1/chat/completions", "application/json", `{"model":"mock-gpt","messages":[`, false, 400, "invalid_json"},
		{"chat trailing data", "POST", "/v1/chat/completions", "application/json", `{"model":"mock-gpt","messages":[{"role":"user","content":"y"}]} x`, false, 400, "invalid_request"},
		{"chat empty body", "POST", "/v1/chat/completions", "application/json", " \n", false, 400, "invalid_json"},
		{"chat unknown parameter", "POST", "/v1/chat/completions", "application/json", `{"model":"mock-gpt","messages":[{"role":"user","content":"y"}],"temprature":1}`, false, 400, "invalid_request"},
		{"chat not an object", "POST", "/v1/chat/completions", "application/json", `"hi"`, false, 400, "invalid_type"},
		{"chat missing messages", "POST", "/v1/chat/completions", "application/json", `{"model":"mock-gpt","stream":true}`, false, 400, "missing_messages"},
		{"chat unknown model", "POST", "/v1/chat/completions", "application/json", `{"model":"nope","messages":[{"role":"user","content":"y"}]}`, false, 404, "model_not_found"},
		{"chat n=2", "POST", "/v1/chat/completions", "application/json", `{"model":"mock-gpt","n":2,"messages":[{"role":"user","content":"y"}]}`, false, 400, "unsupported_value"},
		{"chat bad content part", "POST", "/v1/chat/completions", "application/json", `{"model":"mock-gpt","messages":[{"role":"user","content":[{"type":"audio"}]}]}`, false, 400, "invalid_type"},
		{"chat content number", "POST", "/v1/chat/completions", "application/json", `{"model":"mock-gpt","messages":[{"role":"user","content":5}]}`, false, 400, "invalid_type"},
		{"bad mock directive", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"[mock tokens=many]"}`, false, 400, "invalid_mock_directive"},
		{"mock directive out of bounds", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"[mock tokens=100000000]"}`, false, 400, "invalid_mock_directive"},
		{"mock status out of bounds", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"[mock fail_status=99]"}`, false, 400, "invalid_mock_directive"},
		{"mock delay out of bounds", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"[mock first_delay=1h]"}`, false, 400, "invalid_mock_directive"},
		{"max_tokens overflowing", "POST", "/v1/stream", "application/json", `{"model":"mock-gpt","prompt":"x","max_tokens":9223372036854775807}`, false, 400, "invalid_value"},
		{"no content type", "POST", "/v1/stream", "", `{"model":"mock-gpt","prompt":"x"}`, false, 415, "unsupported_media_type"},
		{"unknown route", "GET", "/v1/nothing", "", ``, false, 404, "not_found"},
		{"wrong method", "GET", "/v1/stream", "", ``, false, 405, "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			req, _ := http.NewRequest(tc.method, h.http.URL+tc.path, body)
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := h.http.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if resp.Header.Get("X-Request-ID") == "" {
				t.Error("no X-Request-ID on an error")
			}
			if eb := readError(t, resp); eb.Error.Code != tc.code {
				t.Errorf("code %q (%s), want %q", eb.Error.Code, eb.Error.Message, tc.code)
			}
		})
	}
}

// TestUpstreamErrorsBeforeStream: an upstream that refuses the call is a
// plain HTTP error with a mapped status, never a 200 stream.
func TestUpstreamErrorsBeforeStream(t *testing.T) {
	const key = "sk-live-SECRETSECRET1234"
	for _, tc := range []struct {
		name       string
		status     int
		body       string
		retryAfter string
		want       int
		code       string
		message    string
	}{
		{"rate limited", 429, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, "7", 429, "rate_limit_exceeded", "Rate limit reached"},
		{"context length", 400, `{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`, "", 400, "context_length_exceeded", "maximum context length"},
		{"bad key echoed", 401, `{"error":{"message":"Incorrect API key provided: ` + key + `.","type":"invalid_request_error","code":"invalid_api_key"}}`, "", 502, "upstream_auth_failed", "rejected the gateway's credentials"},
		{"server error", 500, `{"error":{"message":"The server had an error","type":"server_error"}}`, "", 502, "server_error", "The server had an error"},
		{"overloaded", 503, `{"error":{"message":"overloaded","type":"server_error"}}`, "", 503, "server_error", "overloaded"},
		{"gateway timeout", 504, `<html>timeout</html>`, "", 504, "upstream_timeout", "504"},
		{"html error page", 502, `<html><body>Bad gateway</body></html>`, "", 502, "upstream_error", "502 Bad Gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if strings.HasPrefix(tc.body, "{") {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			h := newHarness(t, newConfig(openAIUpstream(up.URL, key)))
			for _, path := range []string{"/v1/stream", "/v1/chat/completions"} {
				body := `{"model":"up-model","prompt":"hi"}`
				if path != "/v1/stream" {
					body = `{"model":"up-model","stream":true,"messages":[{"role":"user","content":"hi"}]}`
				}
				resp := h.post(t, context.Background(), path, body)
				if resp.StatusCode != tc.want {
					t.Errorf("%s: status %d, want %d", path, resp.StatusCode, tc.want)
				}
				if tc.retryAfter != "" && resp.Header.Get("Retry-After") != tc.retryAfter {
					t.Errorf("%s: Retry-After = %q, want %q", path, resp.Header.Get("Retry-After"), tc.retryAfter)
				}
				eb := readError(t, resp)
				if eb.Error.Code != tc.code || !strings.Contains(eb.Error.Message, tc.message) {
					t.Errorf("%s: error = %+v, want code %q and message containing %q", path, eb.Error, tc.code, tc.message)
				}
				if strings.Contains(eb.Error.Message, key) {
					t.Errorf("%s: the upstream key leaked into the response", path)
				}
			}
			if strings.Contains(h.logs.String(), key) || strings.Contains(h.logs.String(), "SECRETSECRET") {
				t.Errorf("the upstream key leaked into the logs:\n%s", h.logs.String())
			}
		})
	}
}

func TestMockFailStatusBeforeStream(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	resp := h.post(t, context.Background(), "/v1/stream", `{"model":"mock-gpt","prompt":"[mock fail_status=503]"}`)
	if resp.StatusCode != 503 {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if eb := readError(t, resp); eb.Error.Code != "mock_failure" {
		t.Errorf("code %q", eb.Error.Code)
	}
}

// TestMidStreamFailures: once the stream is open, a failure is one error
// event, last, with no done; the text sent before it is intact.
func TestMidStreamFailures(t *testing.T) {
	const head = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"partial"},"finish_reason":null}]}` + "\n\n"
	for _, tc := range []struct {
		name     string
		model    string
		prompt   string
		upstream func(w http.ResponseWriter, r *http.Request)
		code     string
		text     string
	}{
		{name: "mock fails after k tokens", model: "mock-gpt", prompt: "[mock fail_after=3]", code: "mock_failure", text: "This is a "},
		{name: "mock sends a malformed chunk", model: "mock-gpt", prompt: "[mock malformed_after=2]", code: "upstream_malformed", text: "This is "},
		{name: "upstream error object mid-stream", model: "up-model", code: "server_error", text: "partial", upstream: func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, head, `data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":"server_error"}}`+"\n\n")
		}},
		{name: "malformed JSON chunk", model: "up-model", code: "upstream_malformed", text: "partial", upstream: func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, head, `data: {"id":"c","choices":[{"delta":{"content":"oops"`+"\n\n")
		}},
		{name: "closed without finish or [DONE]", model: "up-model", code: "upstream_truncated", text: "partial", upstream: func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, head)
		}},
		{name: "connection reset mid-chunk", model: "up-model", code: "upstream_error", text: "partial", upstream: func(w http.ResponseWriter, r *http.Request) {
			writeSSE(w, head, `data: {"id":"c","object":"chat.compl`)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST instead of FIN
				}
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extraP, extraM string
			if tc.upstream != nil {
				up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/event-stream")
					tc.upstream(w, r)
				})
				extraP, extraM = openAIUpstream(up.URL, "sk-x")
			}
			h := newHarness(t, newConfig(extraP, extraM))
			_, _, evs := h.streamNative(t, `{"model":"`+tc.model+`","prompt":"hi `+tc.prompt+`"}`)
			last := evs[len(evs)-1]
			if last.Type != "error" || last.Error == nil || last.Error.Code != tc.code {
				t.Fatalf("last event = %+v (error %+v), want error with code %q", last, last.Error, tc.code)
			}
			var text string
			for _, ev := range evs[:len(evs)-1] {
				if ev.Type == "done" || ev.Type == "error" {
					t.Fatalf("terminal event %q before the last one", ev.Type)
				}
				text += ev.Content
			}
			if text != tc.text {
				t.Errorf("text before the error = %q, want %q", text, tc.text)
			}
			if !strings.Contains(h.logs.String(), `"end":"upstream_error"`) {
				t.Errorf("access log does not record the upstream error:\n%s", h.logs.String())
			}
		})
	}
}

func TestUnconfiguredProviderIs503(t *testing.T) {
	h := newHarness(t, newConfig(`  openai:
    type: openai
    api_key: ${GATEWAY_TEST_SURELY_UNSET}
`, `  gpt-4o-mini:
    routes:
      - provider: openai
`))
	resp := h.post(t, context.Background(), "/v1/stream", `{"model":"gpt-4o-mini","prompt":"hi"}`)
	if resp.StatusCode != 503 {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if eb := readError(t, resp); eb.Error.Code != "provider_not_configured" {
		t.Errorf("code %q", eb.Error.Code)
	}
}
