package openai

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/streamgate/gateway/providers"
)

// responsesUpstream serves body as a Responses API stream at
// /v1/responses, recording the request's body.
func responsesUpstream(t *testing.T, body string, sent *string) *Provider {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/responses" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		*sent = string(b)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(ts.Close)
	p, err := New(Options{BaseURL: ts.URL + "/v1", APIKey: "k", Responses: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ev(data string) string { return "event: x\ndata: " + data + "\n\n" }

// TestResponsesStreamChunks: each Responses event maps onto what the
// engine counts; events before the first delta go out with it; the
// terminal event carries the finish reason and usage; nothing after it
// counts.
func TestResponsesStreamChunks(t *testing.T) {
	body := ev(`{"type":"response.created","sequence_number":0,"response":{"id":"r","status":"in_progress"}}`) +
		": keep-alive\n\n" +
		ev(`{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"rs","type":"reasoning","summary":[]}}`) +
		ev(`{"type":"response.reasoning_summary_text.delta","sequence_number":2,"output_index":0,"delta":"hmm"}`) +
		ev(`{"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"id":"fc","type":"function_call","call_id":"call_1","name":"f","arguments":""}}`) +
		ev(`{"type":"response.function_call_arguments.delta","sequence_number":4,"output_index":1,"delta":"{\"a\":"}`) +
		ev(`{"type":"response.function_call_arguments.delta","sequence_number":5,"output_index":1,"delta":"1}"}`) +
		ev(`{"type":"response.output_text.delta","sequence_number":6,"output_index":2,"delta":"caf\u00e9"}`) +
		ev(`{"type":"response.completed","sequence_number":7,"response":{"status":"completed","output":[{"type":"function_call"}],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":2},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":4},"total_tokens":14}}}`) +
		ev(`{"type":"response.output_text.delta","sequence_number":8,"output_index":2,"delta":"late"}`) +
		"data: [DONE]\n\n"
	var sent string
	p := responsesUpstream(t, body, &sent)
	req := &providers.Request{Model: "gpt-5", MaxTokens: 50, ReasoningEffort: "low",
		Native: &providers.Native{API: providers.APIOpenAIResponses, Body: []byte(`{"model":"alias","input":"hi","background":true,"tools":[{"type":"web_search"}]}`)}}
	st, err := p.StreamChat(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !strings.Contains(sent, `"model":"gpt-5"`) || !strings.Contains(sent, `"stream":true`) || strings.Contains(sent, "background") ||
		!strings.Contains(sent, `"max_output_tokens":50`) || !strings.Contains(sent, `"reasoning":{"effort":"low"}`) || !strings.Contains(sent, "web_search") {
		t.Errorf("sent %s", sent)
	}
	var got []providers.Chunk
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	if len(got) != 6 {
		t.Fatalf("%d chunks: %+v", len(got), got)
	}
	if got[0].Reasoning != "hmm" || strings.Count(got[0].Raw, "\n") != 3 || !strings.HasPrefix(got[0].Raw, `{"type":"response.created"`) {
		t.Errorf("first chunk %+v", got[0])
	}
	if tc := got[1].ToolCalls; len(tc) != 1 || tc[0].Index != 0 || tc[0].ID != "call_1" || tc[0].Name != "f" {
		t.Errorf("call start %+v", got[1])
	}
	if got[2].ToolCalls[0].Arguments+got[3].ToolCalls[0].Arguments != `{"a":1}` || got[3].ToolCalls[0].Index != 0 {
		t.Errorf("arguments %+v %+v", got[2], got[3])
	}
	if got[4].Content != "café" {
		t.Errorf("text %q", got[4].Content)
	}
	u := got[5].Usage
	if got[5].FinishReason != "tool_calls" || u == nil || u.PromptTokens != 5 || u.CachedTokens != 2 || u.CompletionTokens != 9 || u.ReasoningTokens != 4 || u.TotalTokens != 14 {
		t.Errorf("end %+v usage %+v", got[5], u)
	}
}

// TestResponsesStreamFailures: how a Responses stream breaks, and the
// error each way is.
func TestResponsesStreamFailures(t *testing.T) {
	created := ev(`{"type":"response.created","sequence_number":0,"response":{"id":"r"}}`)
	delta := ev(`{"type":"response.output_text.delta","sequence_number":1,"output_index":0,"delta":"x"}`)
	for _, tc := range []struct {
		name, body string
		check      func(error) bool
	}{
		{"cut before the terminal event", created + delta, func(err error) bool { return errors.Is(err, providers.ErrTruncated) }},
		{"[DONE] before the terminal event", created + delta + "data: [DONE]\n\n", func(err error) bool { return errors.Is(err, providers.ErrTruncated) }},
		{"not JSON", created + "data: {\"type\":\"resp\n\n", func(err error) bool { return errors.Is(err, providers.ErrMalformed) }},
		{"arguments of no call", created + ev(`{"type":"response.function_call_arguments.delta","output_index":3,"delta":"{"}`), func(err error) bool { return errors.Is(err, providers.ErrMalformed) }},
		{"response.failed", created + ev(`{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"boom"}}}`), status(500, "server_error", "boom")},
		{"rate limited in band", created + delta + ev(`{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null}`), status(429, "rate_limit_exceeded", "slow down")},
		{"a bad image", created + ev(`{"type":"response.failed","response":{"error":{"code":"invalid_image_url","message":"no"}}}`), status(400, "invalid_image_url", "no")},
		{"an error of no code", created + ev(`{"type":"error","code":null,"message":"odd"}`), status(502, "upstream_error", "odd")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent string
			p := responsesUpstream(t, tc.body, &sent)
			st, err := p.StreamChat(context.Background(), &providers.Request{Model: "m", Native: &providers.Native{API: providers.APIOpenAIResponses, Body: []byte(`{"input":"hi"}`)}})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			for err == nil {
				_, err = st.Recv()
			}
			if !tc.check(err) {
				t.Errorf("err %v", err)
			}
		})
	}
}

func status(code int, name, msg string) func(error) bool {
	return func(err error) bool {
		var pe *providers.Error
		return errors.As(err, &pe) && pe.Status == code && pe.Code == name && pe.Message == msg
	}
}

// TestResponsesOnlyWhenServed: an upstream not marked as serving the
// Responses API gets the request translated into chat completions.
func TestResponsesOnlyWhenServed(t *testing.T) {
	p, _ := New(Options{BaseURL: "http://127.0.0.1:1/v1"})
	if p.SpeaksNative(providers.APIOpenAIResponses) {
		t.Error("a provider not marked speaks the Responses API")
	}
	p, _ = New(Options{BaseURL: "http://127.0.0.1:1/v1", Responses: true})
	if !p.SpeaksNative(providers.APIOpenAIResponses) || p.SpeaksNative(providers.APIAnthropicMessages) {
		t.Error("SpeaksNative")
	}
}
