package mock

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/providers"
)

func TestDirectives(t *testing.T) {
	o, err := Defaults().WithDirectives("please [mock tokens=3 delay=5ms first_delay=1s fail_status=429 fail_after=2 stall_after=1 malformed_after=0] thanks")
	if err != nil {
		t.Fatal(err)
	}
	if o.Tokens != 3 || o.TokenDelay != 5*time.Millisecond || o.FirstTokenDelay != time.Second || o.FailStatus != 429 || o.FailAfter != 2 || o.StallAfter != 1 || o.MalformedAfter != 0 {
		t.Errorf("options = %+v", o)
	}
	for _, bad := range []string{"[mock tokens=x]", "[mock speed=3]", "[mock tokens]", "[mock tokens=3"} {
		if _, err := Defaults().WithDirectives(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestProviderStreams(t *testing.T) {
	opts := Defaults()
	opts.Directives = true
	p := New(opts)
	st, err := p.StreamChat(context.Background(), &providers.Request{Messages: []providers.Message{{Role: "user", Content: "a b [mock tokens=3]"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var text string
	var last providers.Chunk
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		text += c.Content
		last = c
	}
	if text != "This is a" || last.FinishReason != "stop" || *last.Usage != (providers.Usage{PromptTokens: 4, CompletionTokens: 3, TotalTokens: 7}) {
		t.Errorf("text %q last %+v usage %+v", text, last, last.Usage)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestProviderCancelledDuringDelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := New(Defaults()).StreamChat(ctx, &providers.Request{Messages: []providers.Message{{Role: "user", Content: "[mock first_delay=1h]"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cancel()
	if _, err := st.Recv(); !errors.Is(err, context.Canceled) {
		t.Errorf("Recv after cancel = %v", err)
	}
}

var created = regexp.MustCompile(`"created":\d+`)

// TestHandlerWireFormat pins the mock upstream's output byte for byte to
// OpenAI's streaming format.
func TestHandlerWireFormat(t *testing.T) {
	ts := httptest.NewServer(Handler(Defaults()))
	defer ts.Close()
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"model":"gpt-x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"hi [mock tokens=2]"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	got := created.ReplaceAllString(string(body), `"created":0`)
	const head = `data: {"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":0,"model":"gpt-x","system_fingerprint":"fp_mock","choices":[`
	want := head + `{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
		head + `{"index":0,"delta":{"content":"This "},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
		head + `{"index":0,"delta":{"content":"is"},"logprobs":null,"finish_reason":null}]}` + "\n\n" +
		head + `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}` + "\n\n" +
		head + `],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}` + "\n\n" +
		"data: [DONE]\n\n"
	if got != want {
		t.Errorf("wire output:\n%s\nwant:\n%s", got, want)
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
}

func TestHandlerFailures(t *testing.T) {
	ts := httptest.NewServer(Handler(Defaults()))
	defer ts.Close()
	post := func(prompt string, stream bool) (*http.Response, string) {
		s := "false"
		if stream {
			s = "true"
		}
		resp, err := http.Post(ts.URL+"/chat/completions", "application/json", strings.NewReader(`{"model":"m","stream":`+s+`,"messages":[{"role":"user","content":"`+prompt+`"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := post("[mock fail_status=429]", true); resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, `"code":"mock_failure"`) {
		t.Errorf("fail_status: %d %q", resp.StatusCode, body)
	}
	if _, body := post("[mock fail_after=1]", true); !strings.HasSuffix(body, `"code":"mock_failure"}}`+"\n\n") || strings.Contains(body, "[DONE]") {
		t.Errorf("fail_after: %q", body)
	}
	if _, body := post("[mock malformed_after=1]", true); !strings.Contains(body, `{"content":"broken`) || strings.Contains(body, "[DONE]") {
		t.Errorf("malformed_after: %q", body)
	}
	if resp, body := post("[mock tokens=3]", false); resp.StatusCode != 200 || !strings.Contains(body, `"content":"This is a"`) || !strings.Contains(body, `"total_tokens":5`) {
		t.Errorf("non-stream: %d %q", resp.StatusCode, body)
	}
}
