package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// responsesEvent is one Responses API event as an upstream frames it.
func responsesEvent(typ, fields string) string {
	return fmt.Sprintf("event: %s\ndata: {\"type\":%q,%s}\n\n", typ, typ, fields)
}

// responsesWire is an upstream speaking the Responses API (OpenAI's
// own), whose events the gateway relays.
var responsesWire = wire{
	name: "responses", typ: "openai", settings: "    responses_api: true\n",
	head: []string{
		responsesEvent("response.created", `"sequence_number":0,"response":{"id":"resp_up1","object":"response","created_at":1760600000,"status":"in_progress","error":null,"incomplete_details":null,"model":"gpt-5-mini-2025-08-07","output":[],"usage":null}`),
		responsesEvent("response.in_progress", `"sequence_number":1,"response":{"id":"resp_up1","object":"response","created_at":1760600000,"status":"in_progress","error":null,"incomplete_details":null,"model":"gpt-5-mini-2025-08-07","output":[],"usage":null}`),
		responsesEvent("response.output_item.added", `"sequence_number":2,"output_index":0,"item":{"id":"msg_up1","type":"message","status":"in_progress","content":[],"role":"assistant"}`),
		responsesEvent("response.content_part.added", `"sequence_number":3,"item_id":"msg_up1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}`),
		responsesEvent("response.output_text.delta", `"sequence_number":4,"item_id":"msg_up1","output_index":0,"content_index":0,"delta":"partial","logprobs":[]`),
	},
	rest: []string{
		responsesEvent("response.output_text.done", `"sequence_number":5,"item_id":"msg_up1","output_index":0,"content_index":0,"text":"partial","logprobs":[]`),
		responsesEvent("response.content_part.done", `"sequence_number":6,"item_id":"msg_up1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"partial"}`),
		responsesEvent("response.output_item.done", `"sequence_number":7,"output_index":0,"item":{"id":"msg_up1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"partial"}],"role":"assistant"}`),
		responsesEvent("response.completed", `"sequence_number":8,"response":{"id":"resp_up1","object":"response","created_at":1760600000,"status":"completed","error":null,"incomplete_details":null,"model":"gpt-5-mini-2025-08-07","output":[{"id":"msg_up1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"partial"}],"role":"assistant"}],"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":0},"output_tokens":1,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":8}}`),
	},
	malformed: "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_up1\",\"output_index\":0,\"delta\":\"oo\n\n",
	inBand:    responsesEvent("error", `"sequence_number":5,"code":"server_error","message":"The server had an error while processing your request.","param":null`),
	busy:      503, busyBody: `{"error":{"message":"Service temporarily unavailable","type":"server_error","param":null,"code":"server_error"}}`,
}

// responsesWires are the upstream APIs the Responses endpoint is tested
// against: chat completions and Anthropic translated, Responses relayed.
var responsesWires = append(slices.Clip(wires), responsesWire)

// webSearchUpstream is an upstream speaking the Responses API that
// answers every request with a recorded stream (a web search, then a
// cited answer), recording what it was sent.
func webSearchUpstream(t *testing.T) (*rawBodies, string) {
	t.Helper()
	stream, err := os.ReadFile("testdata/openai_responses_websearch.sse")
	if err != nil {
		t.Fatal(err)
	}
	rec := &rawBodies{}
	_, url := countingUpstream(t, func(_ int32, w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		sseOK(w, strings.SplitAfter(string(stream), "\n\n")...)
	})
	return rec, url
}

// passThroughConfig serves model "gpt" from an upstream speaking the
// Responses API at url, and "mock-gpt" from the mock.
func passThroughConfig(url string) string {
	return newConfig(fmt.Sprintf("  up:\n    type: openai\n    base_url: %s/v1\n    api_key: sk-up-secret-key\n    responses_api: true\n", url),
		"  gpt:\n    routes:\n      - provider: up\n        model: gpt-5-mini\n")
}

// TestResponsesPassThrough: to an upstream that speaks the Responses API
// the request goes as the client sent it (a hosted web_search tool, its
// include), streamed; its events come back as they were, numbered by
// the gateway after the gateway's own response.created and in_progress,
// and the final response is the upstream's, under the gateway's id, and
// stored. The same request for a translated model is refused by name.
func TestResponsesPassThrough(t *testing.T) {
	rec, url := webSearchUpstream(t)
	h := newHarness(t, passThroughConfig(url))
	c := h.openaiGo()
	params := responses.ResponseNewParams{Model: "gpt",
		Input:     responses.ResponseNewParamsInputUnion{OfString: openai.String("Weather in Paris?")},
		Tools:     []responses.ToolUnionParam{{OfWebSearch: &responses.WebSearchToolParam{Type: responses.WebSearchToolTypeWebSearch}}},
		Include:   []responses.ResponseIncludable{responses.ResponseIncludableWebSearchCallActionSources},
		Reasoning: openai.ReasoningParam{Effort: openai.ReasoningEffortLow, Summary: openai.ReasoningSummaryAuto},
	}
	types, text, final := streamResponse(t, c, params)

	sent, hdr, path := rec.get(0)
	if path != "/v1/responses" || hdr.Get("Authorization") != "Bearer sk-up-secret-key" || sent["model"] != "gpt-5-mini" || sent["stream"] != true ||
		!strings.Contains(fmt.Sprint(sent["tools"]), "web_search") || !strings.Contains(fmt.Sprint(sent["include"]), "web_search_call.action.sources") {
		t.Errorf("upstream got %s %v", path, sent)
	}
	upstream := strings.Count(mustRead(t, "testdata/openai_responses_websearch.sse"), "event: ")
	if len(types) != upstream || types[0] != "response.created" || types[1] != "response.in_progress" || types[len(types)-1] != "response.completed" ||
		!slices.Contains(types, "response.web_search_call.searching") || !slices.Contains(types, "response.output_text.annotation.added") ||
		!slices.Contains(types, "response.reasoning_summary_text.delta") {
		t.Errorf("events %q", types)
	}
	if final == nil || !strings.HasPrefix(final.ID, "resp_") || final.ID == "resp_68f0a1b2c3d4e5f60718293a4b5c6d7e0a1b2c3d4e5f6071" ||
		final.OutputText() != "Sunny, 21°C." || text != "Sunny, 21°C." || len(final.Output) != 3 || final.Output[1].Type != "web_search_call" ||
		final.Usage.InputTokensDetails.CachedTokens != 1024 || final.Usage.OutputTokensDetails.ReasoningTokens != 32 {
		t.Fatalf("final %s", final.RawJSON())
	}
	stored, err := c.Responses.Get(context.Background(), final.ID, responses.ResponseGetParams{})
	if err != nil || stored.RawJSON() != final.RawJSON() {
		t.Errorf("stored %v: %s", err, stored.RawJSON())
	}
	h.logs.waitFor(t, `"provider":"up"`)

	// Not streamed: the upstream is still streamed, and the answer is
	// its final object.
	whole, err := c.Responses.New(context.Background(), params)
	if err != nil || whole.OutputText() != "Sunny, 21°C." || whole.ID == final.ID || len(whole.Output) != 3 || whole.Usage.TotalTokens != 3178 {
		t.Fatalf("whole %v: %s", err, whole.RawJSON())
	}
	if sent, _, _ := rec.get(1); sent["stream"] != true {
		t.Errorf("not streamed upstream: %v", sent)
	}

	// A translated model cannot run the hosted tool.
	params.Model, params.Include = "mock-gpt", nil
	_, err = c.Responses.New(context.Background(), params)
	var ae *openai.Error
	if !isStatus(err, http.StatusBadRequest) || !errors.As(err, &ae) || ae.Param != "tools[0]" || !strings.Contains(ae.Message, "web_search") {
		t.Errorf("hosted tool on the mock: %v %s", err, ae.RawJSON())
	}
}

// TestResponsesPassThroughContinues: previous_response_id is the
// gateway's, so the upstream is sent the whole conversation instead: the
// first input, the upstream's own output items (its reasoning and web
// search among them), and the new input. The final object names the
// previous response.
func TestResponsesPassThroughContinues(t *testing.T) {
	rec, url := webSearchUpstream(t)
	h := newHarness(t, passThroughConfig(url))
	c := h.openaiGo()
	first, err := c.Responses.New(context.Background(), responses.ResponseNewParams{Model: "gpt",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Weather in Paris?")}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Responses.New(context.Background(), responses.ResponseNewParams{Model: "gpt", PreviousResponseID: openai.String(first.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("And tomorrow?")}})
	if err != nil {
		t.Fatal(err)
	}
	if second.PreviousResponseID != first.ID {
		t.Errorf("previous_response_id %q, want %q", second.PreviousResponseID, first.ID)
	}
	sent, _, _ := rec.get(1)
	if _, ok := sent["previous_response_id"]; ok {
		t.Errorf("the gateway's id went upstream: %v", sent)
	}
	in, _ := json.Marshal(sent["input"])
	var items []struct{ Type, Role, ID string }
	_ = json.Unmarshal(in, &items)
	var kinds []string
	for _, it := range items {
		kinds = append(kinds, it.Type+"/"+it.Role)
	}
	want := []string{"message/user", "reasoning/", "web_search_call/", "message/assistant", "message/user"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") || items[2].ID != "ws_68f0a1b4bb1c8190a3e5c7e9f1b3d5e7" {
		t.Errorf("upstream input %s", in)
	}
}

// TestResponsesPassThroughBackground: a background response relayed from
// a Responses upstream is read from starting_after on, numbered as the
// streamed one; the upstream never sees background.
func TestResponsesPassThroughBackground(t *testing.T) {
	rec, url := webSearchUpstream(t)
	h := newHarness(t, passThroughConfig(url))
	ctx := context.Background()
	c := h.openaiGo()
	queued, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt", Background: openai.Bool(true),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Weather in Paris?")}})
	if err != nil || queued.Status != "queued" {
		t.Fatalf("%v %s", err, queued.RawJSON())
	}
	st := c.Responses.GetStreaming(ctx, queued.ID, responses.ResponseGetParams{StartingAfter: openai.Int(2)})
	defer st.Close()
	seq, last := int64(2), ""
	for st.Next() {
		ev := st.Current()
		if seq++; ev.SequenceNumber != seq {
			t.Errorf("%s has sequence_number %d, want %d", ev.Type, ev.SequenceNumber, seq)
		}
		last = ev.Type
	}
	if err := st.Err(); err != nil || last != "response.completed" {
		t.Fatalf("ended with %q: %v", last, err)
	}
	final, err := c.Responses.Get(ctx, queued.ID, responses.ResponseGetParams{})
	if err != nil || final.Status != "completed" || !final.Background || final.OutputText() != "Sunny, 21°C." {
		t.Errorf("final %v: %s", err, final.RawJSON())
	}
	if sent, _, _ := rec.get(0); sent["background"] != nil || sent["stream"] != true {
		t.Errorf("upstream got %v", sent)
	}
}

// TestResponsesPassThroughFailsInBand: response.failed from the upstream
// before the first delta is retried like the 5xx its code stands for,
// and the client sees one clean stream; one that persists ends the
// stream (open since the upstream accepted it) with the gateway's one
// response.failed, carrying the upstream's code and message.
func TestResponsesPassThroughFailsInBand(t *testing.T) {
	failed := responsesEvent("response.failed", `"sequence_number":2,"response":{"id":"resp_up1","object":"response","status":"failed","error":{"code":"server_error","message":"The model failed."},"output":[]}`)
	for _, tc := range []struct {
		name      string
		failFirst int32 // calls that fail
		last      string
	}{
		{"once", 1, "response.completed"},
		{"always", 1 << 20, "response.failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, url := countingUpstream(t, func(n int32, rw http.ResponseWriter, _ *http.Request) {
				if n <= tc.failFirst {
					sseOK(rw, responsesWire.head[0], responsesWire.head[1], failed)
					return
				}
				sseOK(rw, append(append([]string{}, responsesWire.head...), responsesWire.rest...)...)
			})
			h := newHarness(t, faultConfig(responsesWire, url))
			status, evs, body := responsesEvents(t, h, "faulty")
			if status != http.StatusOK || calls.Load() < 2 {
				t.Fatalf("status %d after %d calls: %s", status, calls.Load(), body)
			}
			n, _ := responsesTally(t, evs)
			last := evs[len(evs)-1]
			if n["response.created"] != 1 || n["response.failed"]+n["response.completed"] != 1 || last.Event != tc.last {
				t.Fatalf("events %v", n)
			}
			if tc.last == "response.failed" && (!strings.Contains(last.Data, `"code":"server_error"`) || !strings.Contains(last.Data, "The model failed.")) {
				t.Errorf("failed event %s", last.Data)
			}
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
