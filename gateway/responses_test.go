package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/streamgate/gateway/config"
)

// openaiGo is OpenAI's official Go SDK pointed at the gateway by its base
// URL alone.
func (h *harness) openaiGo() openai.Client {
	return openai.NewClient(option.WithBaseURL(h.http.URL+"/v1"), option.WithAPIKey("unused"), option.WithHTTPClient(h.http.Client()), option.WithMaxRetries(0))
}

// streamResponse streams a response with the SDK and returns its events'
// types, the text of its output_text deltas and the final response (from
// its one terminal event), checking that sequence numbers count up from 0.
func streamResponse(t *testing.T, c openai.Client, params responses.ResponseNewParams) ([]string, string, *responses.Response) {
	t.Helper()
	st := c.Responses.NewStreaming(context.Background(), params)
	defer st.Close()
	var (
		types []string
		text  strings.Builder
		final *responses.Response
	)
	for st.Next() {
		ev := st.Current()
		if ev.SequenceNumber != int64(len(types)) {
			t.Errorf("event %d (%s) has sequence_number %d", len(types), ev.Type, ev.SequenceNumber)
		}
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.completed", "response.incomplete", "response.failed":
			if final != nil {
				t.Errorf("a second terminal event %s", ev.Type)
			}
			r := ev.Response
			final = &r
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	return types, text.String(), final
}

// TestResponsesSDKStream: the SDK streams a reasoning model's answer from
// the mock (translated): reasoning item, then message, then
// response.completed with the whole output and usage.
func TestResponsesSDKStream(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	types, text, final := streamResponse(t, h.openaiGo(), responses.ResponseNewParams{
		Model: "mock-gpt", Instructions: openai.String("be brief"),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi [mock tokens=3 reasoning=2]")},
	})
	want := []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added", "response.reasoning_text.delta", "response.reasoning_text.delta",
		"response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Errorf("events\n%q\nwant\n%q", types, want)
	}
	if final == nil || final.Status != "completed" || final.OutputText() != "This is a" || text != "This is a" ||
		len(final.Output) != 2 || final.Output[0].Type != "reasoning" || final.Usage.OutputTokens != 5 || final.Usage.OutputTokensDetails.ReasoningTokens != 2 ||
		final.Instructions.OfString != "be brief" {
		t.Fatalf("final %s", final.RawJSON())
	}
	if !strings.HasPrefix(final.ID, "resp_") || final.Output[1].ID == "" {
		t.Errorf("ids: %s, %s", final.ID, final.Output[1].ID)
	}
}

// TestResponsesSDKWhole: stream=false returns the response object, whose
// output_text the SDK reads; a cut by max_output_tokens is incomplete.
func TestResponsesSDKWhole(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	c := h.openaiGo()
	r, err := c.Responses.New(context.Background(), responses.ResponseNewParams{Model: "mock-gpt",
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("[mock tokens=3]")}})
	if err != nil {
		t.Fatal(err)
	}
	if r.OutputText() != "This is a" || r.Status != "completed" || r.Usage.TotalTokens == 0 {
		t.Errorf("response %s", r.RawJSON())
	}
	r, err = c.Responses.New(context.Background(), responses.ResponseNewParams{Model: "mock-gpt", MaxOutputTokens: openai.Int(2),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("[mock tokens=30]")}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != "incomplete" || r.IncompleteDetails.Reason != "max_output_tokens" || r.OutputText() != "This is" {
		t.Errorf("response %s", r.RawJSON())
	}
	// Streamed, the same cut ends with response.incomplete.
	types, _, final := streamResponse(t, c, responses.ResponseNewParams{Model: "mock-gpt", MaxOutputTokens: openai.Int(2),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("[mock tokens=30]")}})
	if types[len(types)-1] != "response.incomplete" || final.Status != "incomplete" {
		t.Errorf("ended with %s: %s", types[len(types)-1], final.RawJSON())
	}
}

// TestResponsesFunctionCallRoundTrip: through a chat-completions upstream,
// a tool call streams as a function_call item; sent back with its output,
// it reaches the upstream as an assistant tool call and a tool message.
func TestResponsesFunctionCallRoundTrip(t *testing.T) {
	rec, url := toolRoundTripUpstream(t)
	p, m := openAIUpstream(url, "sk-up")
	h := newHarness(t, newConfig(p, m))
	c := h.openaiGo()
	tools := []responses.ToolUnionParam{{OfFunction: &responses.FunctionToolParam{Name: "get_weather", Strict: openai.Bool(false),
		Parameters: map[string]any{"type": "object", "properties": map[string]any{"location": map[string]any{"type": "string"}}}}}}
	user := responses.ResponseInputItemParamOfMessage("weather in Paris?", responses.EasyInputMessageRoleUser)
	types, _, final := streamResponse(t, c, responses.ResponseNewParams{Model: "up-model", Tools: tools,
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{user}}})
	if final == nil || len(final.Output) != 1 {
		t.Fatalf("events %q, final %v", types, final)
	}
	call := final.Output[0]
	if call.Type != "function_call" || call.CallID != "call_Vx3kP" || call.Name != "get_weather" || call.Arguments.OfString != `{"location":"Paris"}` ||
		!strings.Contains(strings.Join(types, " "), "response.function_call_arguments.delta response.function_call_arguments.delta response.function_call_arguments.done") {
		t.Fatalf("call %s; events %q", call.RawJSON(), types)
	}
	first, _, _ := rec.get(0)
	if tl, _ := first["tools"].([]any); len(tl) != 1 || !strings.Contains(fmt.Sprint(tl[0]), "get_weather") {
		t.Errorf("upstream tools %v", first["tools"])
	}

	output := responses.ResponseInputItemParamOfFunctionCallOutput("sunny, 21°C")
	output.OfFunctionCallOutput.CallID = openai.String("call_Vx3kP")
	answer, err := c.Responses.New(context.Background(), responses.ResponseNewParams{Model: "up-model", Tools: tools,
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			user,
			responses.ResponseInputItemParamOfFunctionCall(`{"location":"Paris"}`, "call_Vx3kP", "get_weather"),
			output,
		}}})
	if err != nil {
		t.Fatal(err)
	}
	if answer.OutputText() == "" {
		t.Errorf("answer %s", answer.RawJSON())
	}
	second, _, _ := rec.get(1)
	msgs, _ := second["messages"].([]any)
	if len(msgs) != 3 {
		t.Fatalf("upstream messages %v", second["messages"])
	}
	result, _ := msgs[2].(map[string]any)
	if !strings.Contains(fmt.Sprint(msgs[1]), "call_Vx3kP") || result["role"] != "tool" || result["tool_call_id"] != "call_Vx3kP" || result["content"] != "sunny, 21°C" {
		t.Errorf("upstream second turn %v", msgs)
	}
}

// TestResponsesRefusals: what the gateway cannot serve, or cannot
// translate for a provider that does not speak the API, is refused before
// anything is sent upstream, in OpenAI's envelope, naming the field.
func TestResponsesRefusals(t *testing.T) {
	h := newHarness(t, newConfig("", ""))
	for _, tc := range []struct{ body, param string }{
		{`{"model":"mock-gpt","input":"hi","store":false,"background":true}`, "background"},
		{`{"model":"mock-gpt","input":"hi","conversation":"conv_1"}`, "conversation"},
		{`{"model":"mock-gpt","input":"hi","tools":[{"type":"web_search"}]}`, "tools[0]"},
		{`{"model":"mock-gpt","input":[{"type":"item_reference","id":"x"}]}`, "input[0]"},
		{`{"model":"mock-gpt","input":"hi","max_output_tokens":0}`, "max_output_tokens"},
		{`{"model":"mock-gpt","input":"hi","reasoning":{"effort":"extreme"}}`, "reasoning.effort"},
		{`{"model":"mock-gpt","input":[{"role":"user","content":[{"type":"input_file","file_id":"file_1"}]}]}`, "input[0].content[0]"},
		{`{"model":"mock-gpt","input":"hi","tool_choice":{"type":"web_search_preview"}}`, "tool_choice"},
		{`{"model":"mock-gpt","input":"hi","truncation":"auto"}`, "truncation"},
		{`{"model":"mock-gpt","input":"hi","include":["file_search_call.results"]}`, "include[0]"},
		{`{"model":"mock-gpt","input":"hi","temprature":1}`, "temprature"},
		{`{"model":"mock-gpt","input":5}`, "input"},
	} {
		resp := h.post(t, context.Background(), "/v1/responses", tc.body)
		eb := readError(t, resp)
		if resp.StatusCode != http.StatusBadRequest || eb.Error.Param == nil || *eb.Error.Param != tc.param {
			t.Errorf("%s: %d %+v", tc.body, resp.StatusCode, eb.Error)
		}
	}
}

// responsesEvents posts a streamed Responses request and reads its
// events.
func responsesEvents(t *testing.T, h *harness, model string) (int, []sseEvent, string) {
	t.Helper()
	return postEvents(t, h, "/v1/responses", `{"model":"`+model+`","stream":true,"input":"hi"}`)
}

// responsesTally counts a stream's events by name, gathers its text, and
// checks the sequence numbers.
func responsesTally(t *testing.T, evs []sseEvent) (map[string]int, string) {
	t.Helper()
	n := map[string]int{}
	var text strings.Builder
	for i, ev := range evs {
		n[ev.Event]++
		var d struct {
			Type  string `json:"type"`
			Seq   int    `json:"sequence_number"`
			Delta string `json:"delta"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || d.Type != ev.Event || d.Seq != i {
			t.Errorf("event %d: %q %s", i, ev.Event, ev.Data)
		}
		if ev.Event == "response.output_text.delta" {
			text.WriteString(d.Delta)
		}
	}
	return n, text.String()
}

// TestResponsesFaultsMidStream: once the stream is open, every fault of
// any upstream API (the Responses API's own relayed) ends it with exactly one response.failed, last,
// never response.completed; the text before it is intact.
func TestResponsesFaultsMidStream(t *testing.T) {
	for _, w := range responsesWires {
		for _, f := range midStreamFaults(w) {
			t.Run(w.name+"/"+f.name, func(t *testing.T) {
				h := faultyGateway(t, w, f.then)
				status, evs, body := responsesEvents(t, h, "faulty")
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, body)
				}
				n, text := responsesTally(t, evs)
				last := evs[len(evs)-1]
				if last.Event != "response.failed" || n["response.failed"] != 1 || n["response.completed"] != 0 || n["response.incomplete"] != 0 || n["response.created"] != 1 {
					t.Fatalf("events %v; last %+v", n, last)
				}
				var e struct {
					Response struct {
						Status string
						Error  struct{ Code, Message string }
						Output []struct{ Status string }
					}
				}
				if err := json.Unmarshal([]byte(last.Data), &e); err != nil || e.Response.Status != "failed" || e.Response.Error.Code == "" ||
					len(e.Response.Output) != 1 || e.Response.Output[0].Status != "incomplete" {
					t.Errorf("failed event %s", last.Data)
				}
				if text != "partial" {
					t.Errorf("text %q, want the partial answer intact", text)
				}
			})
		}
	}
}

// TestResponsesFaultsBeforeFirstDelta: a failure before any token is
// retried invisibly: one response.created, one response.completed.
func TestResponsesFaultsBeforeFirstDelta(t *testing.T) {
	for _, w := range responsesWires {
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
				status, evs, body := responsesEvents(t, h, "faulty")
				if status != http.StatusOK {
					t.Fatalf("status %d: %s", status, body)
				}
				n, text := responsesTally(t, evs)
				if calls.Load() != 2 || n["response.created"] != 1 || n["response.completed"] != 1 || n["response.failed"] != 0 || text != "partial" ||
					evs[len(evs)-1].Event != "response.completed" {
					t.Errorf("calls %d, events %v, text %q", calls.Load(), n, text)
				}
			})
		}
	}
}

// TestResponsesDisconnectCancelsUpstream: an SDK client that leaves
// mid-stream cancels the upstream request, whichever API it speaks; the
// response is stored as cancelled, with what was generated.
func TestResponsesDisconnectCancelsUpstream(t *testing.T) {
	for _, w := range responsesWires {
		t.Run(w.name, func(t *testing.T) {
			upstreamGone := make(chan struct{})
			_, url := countingUpstream(t, func(_ int32, rw http.ResponseWriter, r *http.Request) {
				sseOK(rw, w.head...)
				<-r.Context().Done()
				close(upstreamGone)
			})
			h := newHarness(t, faultConfig(w, url), func(c *config.Config) {
				p := c.Providers["up"]
				p.IdleTimeout = nil
				c.Providers["up"] = p
			})
			ctx, cancel := context.WithCancel(context.Background())
			c := h.openaiGo()
			st := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "faulty", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
			var id string
			for st.Next() {
				if ev := st.Current(); ev.Type == "response.created" {
					id = ev.Response.ID
				}
				if st.Current().Delta == "partial" {
					break
				}
			}
			cancel()
			st.Close()
			select {
			case <-upstreamGone:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream request was not cancelled after the client left")
			}
			h.logs.waitFor(t, `"end":"client_gone"`)
			var apiErr *openai.Error
			if err := st.Err(); err != nil && errors.As(err, &apiErr) {
				t.Errorf("an API error after leaving: %v", err)
			}
			// Stored as it was when the client left.
			got, err := c.Responses.Get(context.Background(), id, responses.ResponseGetParams{})
			if err != nil || got.Status != "cancelled" || got.Error.Code != "client_closed_request" || len(got.Output) != 1 || got.Output[0].Status != "incomplete" ||
				(w.name != "responses" && got.OutputText() != "partial") {
				t.Errorf("stored after leaving: %v %s", err, got.RawJSON())
			}
		})
	}
}

// TestResponsesTranslatesReasoning: a chat-completions upstream's
// reasoning_content streams as a reasoning item before the message and
// the function call, counted in usage; sent back as input, the reasoning
// item reaches the upstream as the assistant turn's reasoning_content.
func TestResponsesTranslatesReasoning(t *testing.T) {
	rec, _, url := recordingUpstream(t, deepSeekChunks...)
	p, m := openAIUpstream(url, "sk-test-0123456789")
	h := newHarness(t, newConfig(p, m))
	c := h.openaiGo()
	types, text, final := streamResponse(t, c, responses.ResponseNewParams{Model: "up-model",
		Reasoning: openai.ReasoningParam{Effort: openai.ReasoningEffortHigh},
		Input:     responses.ResponseNewParamsInputUnion{OfString: openai.String("weather in Paris?")}})
	var items []string
	for _, it := range final.Output {
		items = append(items, it.Type)
	}
	if strings.Join(items, ",") != "reasoning,message,function_call" || text != "Checking." || final.Usage.OutputTokensDetails.ReasoningTokens != 20 ||
		!slices.Contains(types, "response.reasoning_text.delta") || final.Output[0].Content[0].Text != "The user wants the weather." {
		t.Fatalf("events %q final %s", types, final.RawJSON())
	}
	if eff := rec.first()["reasoning_effort"]; eff != "high" {
		t.Errorf("reasoning_effort upstream %v", eff)
	}
	// The next turn: the output as input, and the call's result.
	var out struct{ Output []json.RawMessage }
	_ = json.Unmarshal([]byte(final.RawJSON()), &out)
	input, _ := json.Marshal(append(out.Output, json.RawMessage(`{"type":"function_call_output","call_id":"call_0","output":"sunny"}`)))
	resp := h.post(t, context.Background(), "/v1/responses", `{"model":"up-model","input":`+string(input)+`}`)
	if body := drainClose(resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("next turn: %d %s", resp.StatusCode, body)
	}
	msgs := rec.last()["messages"].([]any)
	if len(msgs) != 2 {
		t.Fatalf("upstream messages %v", msgs)
	}
	if a := msgs[0].(map[string]any); a["reasoning_content"] != "The user wants the weather." || a["content"] != "Checking." || a["tool_calls"] == nil {
		t.Errorf("assistant turn sent upstream %v", a)
	}
}
