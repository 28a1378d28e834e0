package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/internal/pgtest"
	"github.com/streamgate/gateway/ledger"
)

// pricedChunks answer "Hi." reporting 1000 prompt tokens (400 of them
// cached) and 200 completion tokens (50 of them reasoning).
var pricedChunks = []string{
	`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi."},"finish_reason":null}]}` + "\n\n",
	`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200,"prompt_tokens_details":{"cached_tokens":400},"completion_tokens_details":{"reasoning_tokens":50}}}` + "\n\ndata: [DONE]\n\n",
}

// ledgerConfig serves "bundled" (gpt-4o-mini, priced by the bundled
// table) and "custom" (priced in the config) from url, with the ledger
// in backend at where.
func ledgerConfig(url, backend, where string) string {
	p, _ := openAIUpstream(url, "sk-test-0123456789")
	models := `  bundled:
    routes: [{provider: up, model: gpt-4o-mini}]
  custom:
    price: {input: 1, cached_input: 0.5, output: 2, reasoning: 4}
    routes: [{provider: up, model: house-model}]
`
	field := "path"
	if backend == "postgres" {
		field = "dsn"
	}
	return newConfig(p, models) + fmt.Sprintf("ledger:\n  backend: %s\n  %s: %s\n  flush_interval: 10ms\n", backend, field, where)
}

// TestLedgerPricesEveryRequest: cached and reasoning tokens are priced
// at their own rates, from the bundled table or the config; the cost is
// in the native done event, the access log, the metrics and the ledger,
// whose rows (SQLite or PostgreSQL) sum by model; a stream the client
// left is recorded too, with what was generated.
func TestLedgerPricesEveryRequest(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			where := filepath.Join(t.TempDir(), "usage.db")
			if backend == "postgres" {
				where = pgtest.Start(t).DSN
			}
			_, _, url := recordingUpstream(t, pricedChunks...)
			h := newHarness(t, ledgerConfig(url, backend, where))
			// gpt-4o-mini: 600 × 0.15 + 400 × 0.075 + 200 × 0.60, per million.
			bundled := (600*0.15 + 400*0.075 + 200*0.60) / 1e6
			custom := (600*1 + 400*0.5 + 150*2 + 50*4) / 1e6
			_, raw, _ := h.streamNative(t, `{"model":"bundled","prompt":"hi"}`)
			done := raw[len(raw)-1].Data
			if !strings.Contains(done, fmt.Sprintf(`"cost":%v`, bundled)) {
				t.Errorf("done event %s, want cost %v", done, bundled)
			}
			for _, m := range []string{"custom", "custom"} {
				drainClose(h.post(t, context.Background(), "/v1/chat/completions", `{"model":"`+m+`","messages":[{"role":"user","content":"hi"}]}`))
			}
			h.logs.waitFor(t, `"cost_usd":`)
			if got := h.metric(t, "gateway_cost_dollars_total", "model", "custom"); math.Abs(got-2*custom) > 1e-12 {
				t.Errorf("cost metric %v, want %v", got, 2*custom)
			}
			h.stop() // the ledger writes what it holds

			var db *ledger.DB
			var err error
			if backend == "sqlite" {
				db, err = ledger.OpenSQLite(context.Background(), where)
			} else {
				db, err = ledger.OpenPostgres(context.Background(), where)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			rows, err := db.Usage(context.Background(), ledger.Query{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour), By: []string{"model"}})
			if err != nil || len(rows) != 2 {
				t.Fatalf("usage %+v %v", rows, err)
			}
			b, c := rows[0], rows[1]
			if b.Model != "bundled" || b.Requests != 1 || b.CachedTokens != 400 || b.ReasoningTokens != 50 || math.Abs(b.Cost-bundled) > 1e-12 {
				t.Errorf("bundled %+v, want cost %v", b, bundled)
			}
			if c.Model != "custom" || c.Requests != 2 || c.Errors != 0 || math.Abs(c.Cost-2*custom) > 1e-12 {
				t.Errorf("custom %+v, want cost %v", c, 2*custom)
			}
		})
	}
}

// TestLedgerBillsADisconnect: a client that leaves mid-stream is billed
// for what was generated (counted, the upstream having said nothing), and
// its row says how it ended.
func TestLedgerBillsADisconnect(t *testing.T) {
	g := newGatedUpstream(t)
	where := filepath.Join(t.TempDir(), "usage.db")
	h := newHarness(t, ledgerConfig(g.url, "sqlite", where))
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.post(t, ctx, "/v1/chat/completions", `{"model":"custom","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	g.send("one", " two", " three")
	sr := newSSEReader(resp.Body)
	for i := 0; i < 3; i++ {
		if _, err := sr.next(); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	resp.Body.Close()
	g.waitCancelled(t)
	h.logs.waitFor(t, `"end":"client_gone"`)
	h.stop()
	db, err := ledger.OpenSQLite(context.Background(), where)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Usage(context.Background(), ledger.Query{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour)})
	if err != nil || len(rows) != 1 || rows[0].CompletionTokens < 2 || rows[0].Cost <= 0 || rows[0].Errors != 0 {
		t.Errorf("usage %+v %v", rows, err)
	}
}

// TestLedgerBadDSN: a database that cannot be reached stops the start
// with an error that names the ledger and never shows the DSN's password.
func TestLedgerBadDSN(t *testing.T) {
	cfg := ledgerConfig("http://127.0.0.1:1", "postgres", "postgres://gw:s3cret-pw@127.0.0.1:1/usage?connect_timeout=1")
	_, err := newServerErr(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "ledger") || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("err %v", err)
	}
}

// newServerErr builds a server from yaml and returns New's error.
func newServerErr(t *testing.T, yaml string) (*Server, error) {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		srv.Close()
	}
	return srv, err
}

// TestAdminUsage: /admin/usage sums the ledger by key, model and day as
// JSON and CSV, checks its parameters, and refuses keys without admin;
// /admin/budgets shows a key's budget and spend.
func TestAdminUsage(t *testing.T) {
	h := withUsage(t)
	get := func(key, query string) *http.Response {
		return h.do(t, context.Background(), "GET", "/admin/usage"+query, key, "")
	}
	for key, want := range map[string]int{frontendKey: http.StatusForbidden, "": http.StatusUnauthorized} {
		resp := get(key, "")
		drainClose(resp)
		if resp.StatusCode != want {
			t.Errorf("key %q: %d, want %d", key, resp.StatusCode, want)
		}
	}
	resp := get(batchKey, "?by=key,model")
	var body struct {
		Data []ledger.Total `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	custom := (600*1 + 400*0.5 + 150*2 + 50*4) / 1e6
	if len(body.Data) != 2 || body.Data[1].Key != "frontend" || body.Data[1].Model != "custom" || body.Data[1].Requests != 2 || math.Abs(body.Data[1].Cost-2*custom) > 1e-12 {
		t.Errorf("usage by key and model: %+v", body.Data)
	}
	resp = get(batchKey, "?format=csv&by=model")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := "model,requests,errors,prompt_tokens,cached_tokens,completion_tokens,reasoning_tokens,cost_usd\nbundled,1,0,1000,400,200,50,"
	if !strings.HasPrefix(string(b), want) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Errorf("csv %q", b)
	}
	for _, q := range []string{"?by=provider", "?from=yesterday", "?from=2026-01-02&to=2026-01-01", "?from=2020-01-01&to=2026-01-01"} {
		resp := get(batchKey, q)
		drainClose(resp)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, resp.StatusCode)
		}
	}
	resp = h.do(t, context.Background(), "GET", "/admin/budgets", batchKey, "")
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	// The memory store opened today's window from the ledger.
	spent := 2*custom + (600*0.15+400*0.075+200*0.60)/1e6
	if !strings.Contains(string(b), `"key":"frontend"`) || !strings.Contains(string(b), fmt.Sprintf(`"spent_dollars":%v`, spent)) {
		t.Errorf("budgets %s, want frontend's spend %v", b, spent)
	}
}

// withUsage returns a gateway whose SQLite ledger holds three requests
// of key frontend (two to model custom, one to bundled), which has a
// budget of $5 a day; key ops is an admin.
func withUsage(t *testing.T) *harness {
	t.Helper()
	_, _, url := recordingUpstream(t, pricedChunks...)
	where := filepath.Join(t.TempDir(), "usage.db")
	cfg := strings.Replace(ledgerConfig(url, "sqlite", where), "auth:\n  enabled: false\n", fmt.Sprintf(`auth:
  enabled: true
keys:
  frontend:
    key: %s
    limits:
      budget: {period: day, dollars: 5}
  ops:
    key: %s
    admin: true
`, frontendKey, batchKey), 1)
	h := newHarness(t, cfg)
	for _, m := range []string{"custom", "custom", "bundled"} {
		drainClose(h.do(t, context.Background(), "POST", "/v1/chat/completions", frontendKey, `{"model":"`+m+`","messages":[{"role":"user","content":"hi"}]}`))
	}
	h.stop() // the ledger writes what it holds
	return newHarness(t, cfg)
}
