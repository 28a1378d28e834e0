package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go"

	"github.com/streamgate/gateway/config"
)

// wire is what an upstream of one API writes, for the fault tests.
type wire struct {
	name, typ string
	// head opens a stream and sends the text "partial"; rest finishes
	// it cleanly.
	head, rest []string
	malformed  string
	inBand     string // an error event inside the stream
	busy       int    // the status of an overloaded upstream
	busyBody   string
	// settings are more lines of the provider's config.
	settings string
}

var wires = []wire{
	{
		name: "anthropic", typ: "anthropic",
		head: []string{
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"partial\"}}\n\n",
		},
		rest: []string{
			"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n",
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		},
		malformed: "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_\n\n",
		inBand:    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
		busy:      529, busyBody: `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
	},
	{
		name: "openai", typ: "openai",
		head: []string{
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n",
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"partial"},"finish_reason":null}]}` + "\n\n",
		},
		rest: []string{
			`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n",
			"data: [DONE]\n\n",
		},
		malformed: `data: {"id":"c","choices":[{"delta":{"content":"oops"` + "\n\n",
		inBand:    `data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":"server_error"}}` + "\n\n",
		busy:      503, busyBody: `{"error":{"message":"overloaded","type":"server_error","code":null}}`,
	},
}

// faultConfig serves model "faulty" from provider up, of w's API at url.
func faultConfig(w wire, url string) string {
	base := url
	if w.typ == "openai" {
		base += "/v1"
	}
	return newConfig(fmt.Sprintf("  up:\n    type: %s\n    base_url: %s\n    api_key: sk-up-secret-key\n    idle_timeout: 100ms\n%s", w.typ, base, w.settings),
		"  faulty:\n    routes:\n      - provider: up\n        model: claude-sonnet-4-5\n")
}

// fault is what an upstream does after the head of its stream.
type fault struct {
	name string
	then func(rw http.ResponseWriter, r *http.Request)
}

// midStreamFaults are the ways an upstream of w's API breaks once its
// stream is open and has sent text.
func midStreamFaults(w wire) []fault {
	return []fault{
		{"reset", func(rw http.ResponseWriter, _ *http.Request) {
			writeSSE(rw, w.head[0][:10])
			if conn, _, err := http.NewResponseController(rw).Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST instead of FIN
				}
				conn.Close()
			}
		}},
		{"malformed chunk", func(rw http.ResponseWriter, _ *http.Request) { writeSSE(rw, w.malformed) }},
		{"missing terminal", func(http.ResponseWriter, *http.Request) {}},
		{"stall", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{"in-band error", func(rw http.ResponseWriter, _ *http.Request) { writeSSE(rw, w.inBand) }},
	}
}

// preStreamFault is how an upstream's first attempt fails before its
// first token.
type preStreamFault struct {
	name  string
	first func(rw http.ResponseWriter)
}

// preStreamFaults are the ways an upstream of w's API fails before its
// first token, worth another attempt.
func preStreamFaults(w wire) []preStreamFault {
	status := func(code int) func(rw http.ResponseWriter) {
		return func(rw http.ResponseWriter) {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(code)
			fmt.Fprint(rw, w.busyBody)
		}
	}
	return []preStreamFault{
		{"in-band error", func(rw http.ResponseWriter) { sseOK(rw, w.head[0], w.inBand) }},
		{"429", status(http.StatusTooManyRequests)},
		{fmt.Sprint(w.busy), status(w.busy)},
	}
}

// toolRoundTripUpstream is a chat-completions upstream answering its
// first request with a recorded tool call and later ones with text,
// recording what it was sent.
func toolRoundTripUpstream(t *testing.T) (*rawBodies, string) {
	t.Helper()
	toolCall, _ := os.ReadFile("testdata/openai_toolcall.sse")
	content, _ := os.ReadFile("testdata/openai_content.sse")
	rec := &rawBodies{}
	_, url := countingUpstream(t, func(n int32, w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		body := content
		if n == 1 {
			body = toolCall
		}
		sseOK(w, strings.SplitAfter(string(body), "\n\n")...)
	})
	return rec, url
}

// postEvents posts body to path and reads the events of the stream it
// answers with; a refusal's status and body otherwise.
func postEvents(t *testing.T, h *harness, path, body string) (int, []sseEvent, string) {
	t.Helper()
	resp := h.post(t, context.Background(), path, body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, drainClose(resp)
	}
	return resp.StatusCode, newSSEReader(resp.Body).readAll(t), ""
}

// messagesEvents posts a streamed Messages request and reads its events.
func messagesEvents(t *testing.T, h *harness, model string) (int, []sseEvent, string) {
	t.Helper()
	return postEvents(t, h, "/v1/messages", `{"model":"`+model+`","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
}

// faultyGateway serves model "faulty" from an upstream of w's API that
// sends its stream's head, then does then.
func faultyGateway(t *testing.T, w wire, then func(rw http.ResponseWriter, r *http.Request)) *harness {
	t.Helper()
	_, url := countingUpstream(t, func(_ int32, rw http.ResponseWriter, r *http.Request) {
		sseOK(rw, w.head...)
		then(rw, r)
	})
	return newHarness(t, faultConfig(w, url))
}

// tally counts a stream's events by name and gathers its text.
func tallyEvents(evs []sseEvent) (map[string]int, string) {
	n := map[string]int{}
	var text strings.Builder
	for _, ev := range evs {
		n[ev.Event]++
		var d struct {
			Delta struct {
				Text string `json:"text"`
			} `json:"delta"`
		}
		if ev.Event == "content_block_delta" && json.Unmarshal([]byte(ev.Data), &d) == nil {
			text.WriteString(d.Delta.Text)
		}
	}
	return n, text.String()
}

// TestMessagesFaultsMidStream: once the stream is open, every fault of
// either upstream API ends it with exactly one error event, last, and no
// message_stop; the text sent before it is intact.
func TestMessagesFaultsMidStream(t *testing.T) {
	for _, w := range wires {
		for _, f := range midStreamFaults(w) {
			t.Run(w.name+"/"+f.name, func(t *testing.T) {
				h := faultyGateway(t, w, f.then)
				status, evs, body := messagesEvents(t, h, "faulty")
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, body)
				}
				n, text := tallyEvents(evs)
				if last := evs[len(evs)-1]; last.Event != "error" || n["error"] != 1 || n["message_stop"] != 0 || n["message_start"] != 1 {
					t.Fatalf("events %v; last %+v", n, last)
				}
				var e struct {
					Type  string `json:"type"`
					Error struct{ Type, Message string }
				}
				if err := json.Unmarshal([]byte(evs[len(evs)-1].Data), &e); err != nil || e.Type != "error" || e.Error.Type == "" || e.Error.Message == "" {
					t.Errorf("error event %q", evs[len(evs)-1].Data)
				}
				if text != "partial" {
					t.Errorf("text %q, want the partial answer intact", text)
				}
				if strings.Contains(h.logs.String(), "sk-up-secret-key") {
					t.Error("the upstream key leaked into the logs")
				}
			})
		}
	}
}

// TestMessagesFaultsBeforeFirstDelta: a failure before anything reached
// the client is retried, and the client sees one clean stream: one
// message_start (the failed attempt's is never relayed), one
// message_stop, no error. An upstream that stays overloaded is answered
// with Anthropic's own status and error type.
func TestMessagesFaultsBeforeFirstDelta(t *testing.T) {
	for _, w := range wires {
		for _, f := range preStreamFaults(w) {
			t.Run(w.name+"/"+f.name, func(t *testing.T) {
				calls, url := countingUpstream(t, func(n int32, rw http.ResponseWriter, _ *http.Request) {
					if n == 1 {
						f.first(rw)
						return
					}
					sseOK(rw, append(append([]string{}, w.head...), w.rest...)...)
				})
				h := newHarness(t, faultConfig(w, url))
				status, evs, body := messagesEvents(t, h, "faulty")
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, body)
				}
				n, text := tallyEvents(evs)
				if calls.Load() != 2 || n["message_start"] != 1 || n["message_stop"] != 1 || n["error"] != 0 || text != "partial" {
					t.Errorf("calls %d, events %v, text %q", calls.Load(), n, text)
				}
				if evs[len(evs)-1].Event != "message_stop" {
					t.Errorf("last event %+v", evs[len(evs)-1])
				}
			})
		}
	}
	t.Run("overloaded throughout", func(t *testing.T) {
		_, url := countingUpstream(t, func(_ int32, rw http.ResponseWriter, _ *http.Request) {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(529)
			fmt.Fprint(rw, wires[0].busyBody)
		})
		h := newHarness(t, faultConfig(wires[0], url))
		client := h.anthropicClient("k")
		_, err := client.Messages.New(context.Background(), sdk.MessageNewParams{Model: "faulty", MaxTokens: 10,
			Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}})
		var ae *sdk.Error
		if !errors.As(err, &ae) || ae.StatusCode != 529 || ae.Type() != "overloaded_error" {
			t.Errorf("err %v", err)
		}
	})
}

// TestMessagesDisconnectCancelsUpstream: an SDK client that leaves
// mid-stream cancels the upstream request, whichever API it speaks.
func TestMessagesDisconnectCancelsUpstream(t *testing.T) {
	for _, w := range wires {
		t.Run(w.name, func(t *testing.T) {
			upstreamGone := make(chan struct{})
			_, url := countingUpstream(t, func(_ int32, rw http.ResponseWriter, r *http.Request) {
				sseOK(rw, w.head...)
				<-r.Context().Done() // a model still generating
				close(upstreamGone)
			})
			h := newHarness(t, faultConfig(w, url), func(c *config.Config) {
				p := c.Providers["up"]
				p.IdleTimeout = nil
				c.Providers["up"] = p
			})
			ctx, cancel := context.WithCancel(context.Background())
			client := h.anthropicClient("k")
			st := client.Messages.NewStreaming(ctx, sdk.MessageNewParams{Model: "faulty", MaxTokens: 100,
				Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}})
			for st.Next() {
				if ev := st.Current(); ev.Type == "content_block_delta" && ev.Delta.Text == "partial" {
					break
				}
			}
			cancel() // Esc in Claude Code
			st.Close()
			select {
			case <-upstreamGone:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream request was not cancelled after the client left")
			}
			h.logs.waitFor(t, `"end":"client_gone"`)
		})
	}
}

// TestMessagesPingWhileWaiting: while nothing flows, the heartbeat is
// Anthropic's ping event, which its clients expect, not a comment.
func TestMessagesPingWhileWaiting(t *testing.T) {
	h := newHarness(t, newConfig("", ""), func(c *config.Config) {
		c.Server.HeartbeatInterval = config.Duration(10 * time.Millisecond)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := h.post(t, ctx, "/v1/messages", `{"model":"mock-gpt","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"x [mock stall_after=0]"}]}`)
	defer resp.Body.Close()
	sr := newSSEReader(resp.Body)
	for i := 0; i < 3; i++ {
		ev, err := sr.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Event == "message_start" {
			continue
		}
		if ev.Event != "ping" || ev.Data != `{"type": "ping"}` {
			t.Fatalf("frame %d = %+v, want a ping event", i, ev)
		}
	}
}

// TestMessagesModelAliases: the dated names Claude Code sends reach the
// model they are aliases of; the response names the model asked for.
func TestMessagesModelAliases(t *testing.T) {
	h := newHarness(t, newConfig("", `  fast:
    aliases: ["claude-haiku-*", "claude-3-5-haiku-20241022"]
    routes: [{provider: mock}]
  smart:
    aliases: ["claude-*"]
    routes: [{provider: mock}]
`))
	for _, tc := range []struct{ asked, served string }{
		{"claude-haiku-4-5-20251001", "fast"},
		{"claude-3-5-haiku-20241022", "fast"},
		{"claude-sonnet-4-5-20250929", "smart"},
		{"mock-gpt", "mock-gpt"},
	} {
		resp := h.post(t, context.Background(), "/v1/messages", `{"model":"`+tc.asked+`","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
		body := drainClose(resp)
		var msg struct{ Model string }
		_ = json.Unmarshal([]byte(body), &msg)
		if resp.StatusCode != http.StatusOK || msg.Model != tc.asked {
			t.Errorf("%s: %d %s", tc.asked, resp.StatusCode, body)
		}
		h.logs.waitFor(t, `"model":"`+tc.served+`"`)
	}
}

// TestMessagesFallbackAcrossAPIs: a model served first by Anthropic (here
// overloaded) and then by an OpenAI-compatible upstream falls back before
// the first token, and the client sees one clean, translated stream.
func TestMessagesFallbackAcrossAPIs(t *testing.T) {
	_, claude := countingUpstream(t, func(_ int32, rw http.ResponseWriter, _ *http.Request) {
		sseOK(rw, wires[0].head[0], wires[0].inBand) // message_start, then overloaded
	})
	_, gpt := countingUpstream(t, func(_ int32, rw http.ResponseWriter, _ *http.Request) {
		sseOK(rw, append(append([]string{}, wires[1].head...), wires[1].rest...)...)
	})
	h := newHarness(t, newConfig(fmt.Sprintf("  claude:\n    type: anthropic\n    base_url: %s\n    api_key: sk-ant-x\n  gpt:\n    type: openai\n    base_url: %s/v1\n    api_key: sk-x\n", claude, gpt),
		"  both:\n    routes:\n      - provider: claude\n        model: claude-sonnet-4-5\n      - provider: gpt\n        model: gpt-4o-mini\n"))
	status, evs, body := messagesEvents(t, h, "both")
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	n, text := tallyEvents(evs)
	if n["message_start"] != 1 || n["message_stop"] != 1 || n["error"] != 0 || text != "partial" {
		t.Errorf("events %v, text %q", n, text)
	}
	if !strings.Contains(evs[0].Data, `"id":"msg_`) || strings.Contains(evs[0].Data, `"msg_1"`) {
		t.Errorf("message_start %s: the failed attempt's leaked", evs[0].Data)
	}
	h.logs.waitFor(t, `"provider":"gpt"`)
}

// TestMessagesFirstTokenTimeout: an Anthropic upstream silent after
// message_start times out on its first token, is retried, and the stream
// ends with one error event of Anthropic's timeout_error type; the failed
// attempts' message_start never reached the client.
func TestMessagesFirstTokenTimeout(t *testing.T) {
	calls, url := countingUpstream(t, func(_ int32, rw http.ResponseWriter, r *http.Request) {
		sseOK(rw, wires[0].head[:2]...)
		<-r.Context().Done()
	})
	h := newHarness(t, newConfig(fmt.Sprintf("  up:\n    type: anthropic\n    base_url: %s\n    api_key: sk-ant-x\n    first_token_timeout: 50ms\n", url),
		"  faulty:\n    routes:\n      - provider: up\n"))
	client := h.anthropicClient("k")
	st := client.Messages.NewStreaming(context.Background(), sdk.MessageNewParams{Model: "faulty", MaxTokens: 10,
		Messages: []sdk.MessageParam{sdk.NewUserMessage(sdk.NewTextBlock("hi"))}})
	for st.Next() {
		t.Errorf("event %s before the error", st.Current().Type)
	}
	var ae *sdk.Error
	if err := st.Err(); !errors.As(err, &ae) || ae.Type() != "timeout_error" || calls.Load() < 2 {
		t.Errorf("err %v after %d attempts", err, calls.Load())
	}
	st.Close()
}

// TestMessagesRetrySendsTheBodyAgain: an attempt after a failed one sends
// the request's body as the first did (the stream keeps it until its
// first delta, and only then lets go of it).
func TestMessagesRetrySendsTheBodyAgain(t *testing.T) {
	bodies := make(chan []byte, 2)
	calls, url := countingUpstream(t, func(n int32, rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- b
		if n == 1 {
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(wires[0].busy)
			fmt.Fprint(rw, wires[0].busyBody)
			return
		}
		sseOK(rw, append(append([]string{}, wires[0].head...), wires[0].rest...)...)
	})
	h := newHarness(t, faultConfig(wires[0], url))
	status, evs, body := messagesEvents(t, h, "faulty")
	if status != http.StatusOK || evs[len(evs)-1].Event != "message_stop" {
		t.Fatalf("status %d: %s", status, body)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d upstream calls, want 2", calls.Load())
	}
	first, second := <-bodies, <-bodies
	if len(first) == 0 || !bytes.Equal(first, second) {
		t.Errorf("the retry sent %q, the first attempt %q", second, first)
	}
}
