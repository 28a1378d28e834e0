package openai

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/providers/mock"
)

func userRequest(model, text string) *providers.Request {
	return &providers.Request{Model: model, Messages: []providers.Message{{Role: "user", Content: text}}}
}

func drain(t *testing.T, st providers.Stream) (string, *providers.Usage, error) {
	t.Helper()
	defer st.Close()
	var text strings.Builder
	var usage *providers.Usage
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return text.String(), usage, nil
		}
		if err != nil {
			return text.String(), usage, err
		}
		text.WriteString(c.Content)
		if c.Usage != nil {
			usage = c.Usage
		}
	}
}

// heldRequests records a weak pointer to each request it sends, and each
// response it gets.
type heldRequests struct {
	next  http.RoundTripper
	sent  []weak.Pointer[http.Request]
	resps []*http.Response
}

func (h *heldRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	h.sent = append(h.sent, weak.Make(req))
	resp, err := h.next.RoundTrip(req)
	if resp != nil {
		h.resps = append(h.resps, resp)
	}
	return resp, err
}

// TestOpenStreamLetsGoOfItsRequest: while a stream is open, the request
// that opened it (headers, URL, encoded body: go-openai's, or the
// gateway's for a Responses upstream) is garbage, and its response keeps
// no headers: an open stream does not carry them for its whole life.
func TestOpenStreamLetsGoOfItsRequest(t *testing.T) {
	for _, tc := range []struct {
		name, path, first string
		req               *providers.Request
	}{
		{"chat completions", "/v1/chat/completions",
			`data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"first"},"finish_reason":null}]}`,
			userRequest("m", "hello")},
		{"responses", "/v1/responses",
			`event: response.output_text.delta` + "\n" + `data: {"type":"response.output_text.delta","sequence_number":1,"output_index":0,"delta":"first"}`,
			&providers.Request{Model: "m", Native: &providers.Native{API: providers.APIOpenAIResponses, Body: []byte(`{"model":"m","input":"hello"}`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != tc.path {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("X-Request-Id", "req_upstream")
				_, _ = io.WriteString(w, tc.first+"\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			defer ts.Close()
			defer close(release)
			held := &heldRequests{next: providers.NewTransport(time.Second)}
			p, err := New(Options{BaseURL: ts.URL + "/v1", APIKey: "sk-upstream", Transport: held, Responses: true})
			if err != nil {
				t.Fatal(err)
			}
			st, err := p.StreamChat(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if c, err := st.Recv(); err != nil || c.Content != "first" {
				t.Fatalf("first chunk %+v, %v", c, err)
			}
			runtime.GC()
			if len(held.sent) != 1 || held.sent[0].Value() != nil {
				t.Fatalf("%d requests sent; the open stream still holds the one it was opened with", len(held.sent))
			}
			if r := held.resps[0]; r.Header != nil || r.Request != nil {
				t.Errorf("the open stream's response keeps headers %v, request %v", r.Header, r.Request != nil)
			}
		})
	}
}

// TestAgainstMockUpstream runs the provider against the mock's OpenAI wire
// server, the same pair the benchmarks use.
func TestAgainstMockUpstream(t *testing.T) {
	ts := httptest.NewServer(mock.Handler(mock.Defaults()))
	defer ts.Close()
	p, err := New(Options{BaseURL: ts.URL + "/v1"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.StreamChat(context.Background(), userRequest("m", "one two [mock tokens=4]"))
	if err != nil {
		t.Fatal(err)
	}
	text, usage, err := drain(t, st)
	if err != nil || text != "This is a streamed" || usage == nil || usage.CompletionTokens != 4 || usage.PromptTokens != 4 {
		t.Errorf("text %q usage %+v err %v", text, usage, err)
	}

	// The mock's failure modes arrive as the errors the gateway maps.
	_, err = p.StreamChat(context.Background(), userRequest("m", "[mock fail_status=429]"))
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Status != 429 || pe.RetryAfter != time.Second || pe.Code != "mock_failure" {
		t.Errorf("fail_status=429: %v (%+v)", err, pe)
	}
	st, err = p.StreamChat(context.Background(), userRequest("m", "[mock malformed_after=1]"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := drain(t, st); !errors.Is(err, providers.ErrMalformed) {
		t.Errorf("malformed_after: %v", err)
	}
}

// TestManyKeepAlivesBeforeFirstToken: reasoning models behind some servers
// send hundreds of comment lines while they think; go-openai gives up
// after 300 by default.
func TestManyKeepAlivesBeforeFirstToken(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 2000; i++ {
			_, _ = io.WriteString(w, ": keep-alive\n\n")
		}
		_, _ = io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"thought"},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
	}))
	defer ts.Close()
	p, _ := New(Options{BaseURL: ts.URL})
	st, err := p.StreamChat(context.Background(), userRequest("m", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if text, _, err := drain(t, st); err != nil || text != "thought" {
		t.Errorf("text %q err %v", text, err)
	}
}

func TestHeadersOrganizationAndAzure(t *testing.T) {
	var got *http.Request
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
	}))
	defer ts.Close()

	p, _ := New(Options{BaseURL: ts.URL + "/v1/", APIKey: "sk-1", Organization: "org-7", Headers: map[string]string{"HTTP-Referer": "https://app.example"}})
	st, err := p.StreamChat(context.Background(), userRequest("m", "x"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, _ = drain(t, st)
	if got.URL.Path != "/v1/chat/completions" || got.Header.Get("Authorization") != "Bearer sk-1" || got.Header.Get("OpenAI-Organization") != "org-7" || got.Header.Get("HTTP-Referer") != "https://app.example" {
		t.Errorf("request: %s %v", got.URL, got.Header)
	}

	p, _ = New(Options{BaseURL: ts.URL, APIKey: "az-key", Azure: &AzureOptions{APIVersion: "2024-10-21", Deployments: map[string]string{"gpt-4o": "prod-4o"}}})
	st, err = p.StreamChat(context.Background(), userRequest("gpt-4o", "x"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, _ = drain(t, st)
	if got.URL.Path != "/openai/deployments/prod-4o/chat/completions" || got.URL.Query().Get("api-version") != "2024-10-21" || got.Header.Get("api-key") != "az-key" {
		t.Errorf("azure request: %s %v", got.URL, got.Header)
	}
}

func TestMissingKeyForOpenAIIsUnavailable(t *testing.T) {
	p, _ := New(Options{})
	if p.Unavailable() == nil {
		t.Fatal("OpenAI without a key is usable")
	}
	_, err := p.StreamChat(context.Background(), userRequest("gpt-4o", "x"))
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Status != 503 || !errors.Is(err, providers.ErrUnavailable) {
		t.Errorf("err = %v", err)
	}
	// Local servers need no key.
	if p, _ := New(Options{BaseURL: "http://127.0.0.1:11434/v1"}); p.Unavailable() != nil {
		t.Errorf("a keyless local server is unavailable: %v", p.Unavailable())
	}
}

func TestParseRetryAfter(t *testing.T) {
	if d := parseRetryAfter("3"); d != 3*time.Second {
		t.Errorf("seconds: %v", d)
	}
	if d := parseRetryAfter(time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)); d < 58*time.Second || d > time.Minute {
		t.Errorf("date: %v", d)
	}
	if d := parseRetryAfter("soon"); d != 0 {
		t.Errorf("garbage: %v", d)
	}
}

// TestIdleOncePerNetworkRead: fifteen chunks sent in one write (3.3 KiB,
// three times what the transport's buffer holds) reach the reader in at
// most two reads from the network (what came with the headers, then the
// rest), and idle is called before each of those, not before each read of
// the body from the transport's buffer: that was a flush to the client
// per kilobyte. The last call comes when the upstream pauses, before it
// sends the rest.
func TestIdleOncePerNetworkRead(t *testing.T) {
	const burst = 15
	chunk := func(text string) string {
		return `data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"` + text + `"},"logprobs":null,"finish_reason":null}]}` + "\n\n"
	}
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, strings.Repeat(chunk("token "), burst))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, chunk("last")+`data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
	}))
	defer ts.Close()
	p, err := New(Options{BaseURL: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.StreamChat(context.Background(), userRequest("m", "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	received := 0
	var idleAt []int
	st.(providers.IdleNotifier).NotifyIdle(func() {
		idleAt = append(idleAt, received)
		if received == burst {
			close(release)
		}
	})
	var text strings.Builder
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		text.WriteString(c.Content)
		if c.Content != "" {
			received++
		}
	}
	if want := strings.Repeat("token ", burst) + "last"; text.String() != want {
		t.Fatalf("text %q", text.String())
	}
	within := 0
	for _, n := range idleAt {
		if n > 0 && n < burst {
			within++
		}
	}
	if within > 1 {
		t.Fatalf("idle called %d times within the burst (calls after %v chunks): more than once per read from the network", within, idleAt)
	}
	if len(idleAt) == 0 || idleAt[len(idleAt)-1] != burst {
		t.Fatalf("idle calls %v: none when the upstream paused", idleAt)
	}
}
