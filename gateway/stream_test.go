package gateway

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
)

func TestNativeStreamEventSequence(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	resp, raw, evs := h.streamNative(t, `{"model":"mock-gpt","prompt":"hello there"}`)

	for header, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("stream is encoded: %q", resp.Header.Get("Content-Encoding"))
	}
	reqID := resp.Header.Get("X-Request-ID")
	if reqID == "" {
		t.Fatal("no X-Request-ID")
	}

	// connected, 5 deltas, done; ids 1..7 in order.
	if len(evs) != 7 {
		t.Fatalf("got %d events, want 7: %+v", len(raw), raw)
	}
	for i, ev := range raw {
		if ev.ID != strconv.Itoa(i+1) {
			t.Errorf("event %d has id %q, want %d", i, ev.ID, i+1)
		}
		if ev.Event != "" {
			t.Errorf("event %d is named %q without named_events", i, ev.Event)
		}
	}
	if c := evs[0]; c.Type != "connected" || c.ID != reqID || c.Model != "mock-gpt" || c.Provider != "mock" {
		t.Errorf("first event = %+v, want connected with id %s, model mock-gpt, provider mock", c, reqID)
	}
	var text strings.Builder
	for _, ev := range evs[1:6] {
		if ev.Type != "delta" {
			t.Fatalf("middle event type %q, want delta", ev.Type)
		}
		text.WriteString(ev.Content)
	}
	if got, want := text.String(), "This is a streamed reply"; got != want {
		t.Errorf("text = %q, want %q", got, want)
	}
	done := evs[6]
	if done.Type != "done" || done.FinishReason != "stop" || done.Usage == nil || done.TTFTms == nil || done.DurationMs == nil {
		t.Fatalf("last event = %+v, want done with finish_reason, usage, ttft_ms, duration_ms", done)
	}
	if u := done.Usage; u.PromptTokens != 2 || u.CompletionTokens != 5 || u.TotalTokens != 7 || done.UsageEstimated {
		t.Errorf("usage = %+v (estimated %v), want 2+5=7 from the provider", *u, done.UsageEstimated)
	}
}

func TestNamedEvents(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	for _, tc := range []struct{ name, path, body string }{
		{"body field", "/v1/stream", `{"model":"mock-gpt","prompt":"x [mock tokens=2]","named_events":true}`},
		{"query parameter", "/v1/stream?named_events=true", `{"model":"mock-gpt","prompt":"x [mock tokens=2]"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.post(t, context.Background(), tc.path, tc.body)
			defer resp.Body.Close()
			var names []string
			for _, ev := range newSSEReader(resp.Body).readAll(t) {
				if decodeEvent(t, ev).Type != ev.Event {
					t.Errorf("event name %q differs from data type in %q", ev.Event, ev.Data)
				}
				names = append(names, ev.Event)
			}
			if got := strings.Join(names, ","); got != "connected,delta,delta,done" {
				t.Errorf("events = %s", got)
			}
		})
	}
}

func TestSystemAndMessages(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	_, _, evs := h.streamNative(t, `{"model":"mock-gpt","system":"be brief","messages":[{"role":"user","content":"one two three"}],"max_tokens":3}`)
	done := evs[len(evs)-1]
	// The mock counts one token per word: 2 (system) + 3 (user).
	if done.FinishReason != "length" || done.Usage.PromptTokens != 5 || done.Usage.CompletionTokens != 3 {
		t.Errorf("done = %+v usage %+v, want finish length, 5 prompt and 3 completion tokens", done, *done.Usage)
	}
}

// TestFirstDeltaFlushedWhileUpstreamGenerates holds the upstream after its
// first token: the client must already have that token, which proves that
// nothing between the upstream and the client buffers it.
func TestFirstDeltaFlushedWhileUpstreamGenerates(t *testing.T) {
	release := make(chan struct{})
	up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		writeSSE(w,
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`+"\n\n",
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"first"},"finish_reason":null}]}`+"\n\n")
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		writeSSE(w,
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" second"},"finish_reason":"stop"}]}`+"\n\n",
			"data: [DONE]\n\n")
	})
	h := newHarness(t, newConfig(openAIUpstream(up.URL, "sk-test")))
	resp := h.post(t, context.Background(), "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	defer resp.Body.Close()
	sr := newSSEReader(resp.Body)
	for _, want := range []string{"connected", "delta"} {
		ev, err := sr.next()
		if err != nil {
			t.Fatalf("reading %s while the upstream holds: %v", want, err)
		}
		if ne := decodeEvent(t, ev); ne.Type != want || (want == "delta" && ne.Content != "first") {
			t.Fatalf("got %+v, want %s", ne, want)
		}
	}
	close(release)
	rest := sr.readAll(t)
	if len(rest) != 2 || decodeEvent(t, rest[0]).Content != " second" || decodeEvent(t, rest[1]).Type != "done" {
		t.Fatalf("after release: %+v", rest)
	}
}

// TestOpenAIWireFormat replays recorded OpenAI streams byte for byte
// through the openai provider and checks what the native endpoint makes of
// them, usage included.
func TestOpenAIWireFormat(t *testing.T) {
	recorded, err := os.ReadFile("testdata/openai_content.sse")
	if err != nil {
		t.Fatal(err)
	}
	var gotReq map[string]any
	up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-wire" {
			http.Error(w, "bad path or auth", http.StatusBadRequest)
			return
		}
		_ = decodeBody(r, &gotReq)
		w.Header().Set("Content-Type", "text/event-stream")
		writeSSE(w, strings.SplitAfter(string(recorded), "\n\n")...)
	})
	h := newHarness(t, newConfig(openAIUpstream(up.URL, "sk-wire")))
	_, _, evs := h.streamNative(t, `{"model":"up-model","prompt":"hi","temperature":0,"max_tokens":50,"stop":"END"}`)

	if gotReq["model"] != "gpt-4o-mini" || gotReq["stream"] != true {
		t.Errorf("upstream request = %v, want model gpt-4o-mini, stream true", gotReq)
	}
	if so, _ := gotReq["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("upstream was not asked for usage: %v", gotReq["stream_options"])
	}
	if temp, ok := gotReq["temperature"].(float64); !ok || temp > 1e-6 {
		t.Errorf("temperature 0 was sent as %v", gotReq["temperature"])
	}
	var text strings.Builder
	for _, ev := range evs[1 : len(evs)-1] {
		text.WriteString(ev.Content)
	}
	if got, want := text.String(), "Hello! How can I help \"you\"\n today?"; got != want {
		t.Errorf("text = %q, want %q", got, want)
	}
	done := evs[len(evs)-1]
	if done.Type != "done" || done.FinishReason != "stop" || done.Usage.PromptTokens != 9 || done.Usage.CompletionTokens != 10 || done.Usage.TotalTokens != 19 {
		t.Errorf("done = %+v usage %+v", done, done.Usage)
	}
}

// TestHeartbeatWhileWaitingForFirstToken stalls the model before its first
// token: ": ping" comments must keep the connection alive meanwhile.
func TestHeartbeatWhileWaitingForFirstToken(t *testing.T) {
	h := newHarness(t, newConfig("", ""), func(c *config.Config) {
		c.Server.HeartbeatInterval = config.Duration(10 * time.Millisecond)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := h.post(t, ctx, "/v1/stream", `{"model":"mock-gpt","prompt":"x [mock stall_after=0]"}`)
	defer resp.Body.Close()
	sr := newSSEReader(resp.Body)
	if ev, err := sr.next(); err != nil || decodeEvent(t, ev).Type != "connected" {
		t.Fatalf("first frame: %+v %v", ev, err)
	}
	for i := 0; i < 3; i++ {
		ev, err := sr.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Comment != "ping" || ev.Data != "" {
			t.Fatalf("frame %d = %+v, want a ping comment", i, ev)
		}
	}
}
