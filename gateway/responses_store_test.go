package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/streamgate/gateway/internal/redistest"
)

// TestResponsesStoredConversation: a stored response is read back,
// continued with previous_response_id (the upstream, which keeps no
// state, gets the whole conversation), listed by its input items, hidden
// from another key, and deleted.
func TestResponsesStoredConversation(t *testing.T) {
	rec, _, url := recordingUpstream(t,
		`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Paris."},"finish_reason":null}]}`+"\n\n",
		`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n",
		"data: [DONE]\n\n")
	p, m := openAIUpstream(url, "sk-up")
	cfg := strings.Replace(keysConfig("      requests_per_minute: 600\n"), "  other-model:\n", m+"  other-model:\n", 1)
	cfg = strings.Replace(cfg, "providers:\n", "providers:\n"+p, 1)
	cfg = strings.Replace(cfg, "    models: [mock-gpt]\n", "", 1)
	h := newHarness(t, cfg)
	client := func(key string) openai.Client {
		return openai.NewClient(option.WithBaseURL(h.http.URL+"/v1"), option.WithAPIKey(key), option.WithHTTPClient(h.http.Client()), option.WithMaxRetries(0))
	}
	c, other := client(frontendKey), client(batchKey)
	ctx := context.Background()

	first, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "up-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Capital of France?")}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Responses.Get(ctx, first.ID, responses.ResponseGetParams{})
	if err != nil || got.OutputText() != "Paris." || got.ID != first.ID || !strings.Contains(got.RawJSON(), `"store":true`) {
		t.Fatalf("get: %v %s", err, got.RawJSON())
	}
	if _, err := other.Responses.Get(ctx, first.ID, responses.ResponseGetParams{}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("another key's get: %v, want 404", err)
	}

	_, _, second := streamResponse(t, c, responses.ResponseNewParams{Model: "up-model", PreviousResponseID: openai.String(first.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("And of Italy?")}})
	if second == nil || second.PreviousResponseID != first.ID {
		t.Fatalf("second %v", second)
	}
	msgs, _ := rec.last()["messages"].([]any)
	var turns []string
	for _, m := range msgs {
		mm := m.(map[string]any)
		turns = append(turns, fmt.Sprint(mm["role"], ":", mm["content"]))
	}
	if strings.Join(turns, " | ") != "user:Capital of France? | assistant:Paris. | user:And of Italy?" {
		t.Errorf("upstream got %q", turns)
	}
	if _, err := other.Responses.New(ctx, responses.ResponseNewParams{Model: "up-model", PreviousResponseID: openai.String(first.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("another key continuing: %v, want 404", err)
	}

	items, err := c.Responses.InputItems.List(ctx, second.ID, responses.InputItemListParams{Order: responses.InputItemListParamsOrderAsc})
	if err != nil || len(items.Data) != 3 || items.Data[0].Type != "message" || items.Data[1].Role != "assistant" || items.Data[2].ID == "" {
		t.Errorf("input items %v %s", err, items.RawJSON())
	}

	if err := c.Responses.Delete(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Responses.Get(ctx, first.ID, responses.ResponseGetParams{}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("get after delete: %v, want 404", err)
	}
	// store: false keeps nothing.
	r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "up-model", Store: openai.Bool(false), Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}})
	if err != nil || !strings.Contains(r.RawJSON(), `"store":false`) {
		t.Fatalf("%v %s", err, r.RawJSON())
	}
	if _, err := c.Responses.Get(ctx, r.ID, responses.ResponseGetParams{}); !isStatus(err, http.StatusNotFound) {
		t.Errorf("an unstored response: %v, want 404", err)
	}
}

func isStatus(err error, status int) bool {
	var ae *openai.Error
	return err != nil && errors.As(err, &ae) && ae.StatusCode == status
}

// redisResponsesConfig keeps streams and responses in the Redis at addr.
func redisResponsesConfig(g *gatedUpstream, addr string) string {
	return resumeConfig(g, fmt.Sprintf(`streams:
  backend: redis
  redis:
    addr: %s
  token_secret: test-secret-0123456789abcdef
  lease_ttl: 1s
responses:
  backend: redis
`, addr))
}

// TestResponsesBackgroundOnAnotherReplica: a background response created
// on gateway A returns at once, queued; its events are read on gateway B
// from a sequence number on (starting_after), live, to
// response.completed; B then serves the final object. A second one is
// cancelled from B: A's upstream request stops.
func TestResponsesBackgroundOnAnotherReplica(t *testing.T) {
	srv := redistest.Start(t)
	g := newGatedUpstream(t)
	a, b := newHarness(t, redisResponsesConfig(g, srv.Addr)), newHarness(t, redisResponsesConfig(g, srv.Addr))
	ctx := context.Background()
	ca, cb := a.openaiGo(), b.openaiGo()
	queued, err := ca.Responses.New(ctx, responses.ResponseNewParams{Model: "up-model", Background: openai.Bool(true),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}})
	if err != nil || queued.Status != "queued" || !queued.Background {
		t.Fatalf("%v %s", err, queued.RawJSON())
	}
	<-g.started
	g.send("one", " two")

	// From B, after response.created and in_progress (0 and 1).
	resp := b.do(t, ctx, http.MethodGet, "/v1/responses/"+queued.ID+"?stream=true&starting_after=1", "", "")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow on B: %d %s", resp.StatusCode, drainClose(resp))
	}
	sr := newSSEReader(resp.Body)
	g.send(" three")
	g.finish()
	evs := sr.readAll(t)
	var text strings.Builder
	for i, ev := range evs {
		var d struct {
			Type  string `json:"type"`
			Seq   int    `json:"sequence_number"`
			Delta string `json:"delta"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil || d.Seq != i+2 || d.Type != ev.Event {
			t.Errorf("event %d: %s %s", i, ev.Event, ev.Data)
		}
		if d.Type == "response.output_text.delta" {
			text.WriteString(d.Delta)
		}
	}
	if len(evs) == 0 || evs[len(evs)-1].Event != "response.completed" || text.String() != "one two three" {
		t.Fatalf("events %+v, text %q", evs, text.String())
	}
	final, err := cb.Responses.Get(ctx, queued.ID, responses.ResponseGetParams{})
	if err != nil || final.Status != "completed" || final.OutputText() != "one two three" {
		t.Errorf("final on B: %v %s", err, final.RawJSON())
	}

	g2 := newGatedUpstream(t)
	a2, b2 := newHarness(t, redisResponsesConfig(g2, srv.Addr)), newHarness(t, redisResponsesConfig(g2, srv.Addr))
	ca2, cb2 := a2.openaiGo(), b2.openaiGo()
	run, err := ca2.Responses.New(ctx, responses.ResponseNewParams{Model: "up-model", Background: openai.Bool(true),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("go on")}})
	if err != nil {
		t.Fatal(err)
	}
	<-g2.started
	g2.send("partial")
	cancelled, err := cb2.Responses.Cancel(ctx, run.ID)
	if err != nil || cancelled.Status != "cancelled" {
		t.Fatalf("cancel on B: %v %s", err, cancelled.RawJSON())
	}
	g2.waitCancelled(t)
}
