package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamgate/gateway/internal/pgtest"
)

// keysAdminConfig has config keys frontend (no admin) and ops (admin),
// and the ledger in PostgreSQL at dsn, where runtime keys are kept.
func keysAdminConfig(dsn string) string {
	return strings.Replace(newConfig("", ""), "auth:\n  enabled: false\n", fmt.Sprintf(`auth:
  enabled: true
keys:
  frontend:
    key: %s
    models: [mock-gpt]
  ops:
    key: %s
    admin: true
`, frontendKey, batchKey), 1) + "ledger:\n  backend: postgres\n  dsn: " + dsn + "\n  flush_interval: 10ms\n"
}

// call sends a request and decodes a JSON answer into out (if not nil).
func (h *harness) call(t *testing.T, method, path, key, body string, out any) int {
	t.Helper()
	resp := h.do(t, context.Background(), method, path, key, body)
	defer drainClose(resp)
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %d, body: %v", method, path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode
}

// waitKeys waits until b holds the runtime keys a holds.
func waitKeys(t *testing.T, a, b *harness) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.srv.keys.Wait(ctx, a.srv.keys.Revision()); err != nil {
		t.Fatalf("the second replica never saw revision %d: %v", a.srv.keys.Revision(), err)
	}
}

// TestRuntimeKeysAcrossReplicas: an admin key makes a key on one replica,
// whose secret works at once there and on a second replica once it polls;
// narrowing its models and revoking it are seen by the second replica
// too; config keys keep working beside it, and cannot be changed.
func TestRuntimeKeysAcrossReplicas(t *testing.T) {
	cfg := keysAdminConfig(pgtest.Start(t).DSN)
	a, b := newHarness(t, cfg), newHarness(t, cfg)
	stream := `{"model":"mock-gpt","prompt":"hi"}`

	var made keyView
	if st := a.call(t, "POST", "/admin/keys", batchKey, `{"name":"team-a","models":["mock-gpt","other"],"limits":{"requests_per_minute":600,"budget":{"period":"month","dollars":50}}}`, nil); st != http.StatusBadRequest {
		t.Errorf("a key naming a model not configured: %d, want 400", st)
	}
	if st := a.call(t, "POST", "/admin/keys", batchKey, `{"name":"team-a","limits":{"requests_per_minute":600,"budget":{"period":"month","dollars":50}}}`, &made); st != http.StatusCreated {
		t.Fatalf("create: %d %+v", st, made)
	}
	if made.Source != "runtime" || !strings.HasPrefix(made.Key, "sk-gw-") || made.Limits.Budget == nil || made.Limits.Budget.Dollars != 50 {
		t.Fatalf("created %+v", made)
	}
	secret := made.Key
	if st := a.call(t, "POST", "/v1/stream", secret, stream, nil); st != http.StatusOK {
		t.Errorf("the new key on the replica that made it: %d", st)
	}
	waitKeys(t, a, b)
	if st := b.call(t, "POST", "/v1/stream", secret, stream, nil); st != http.StatusOK {
		t.Errorf("the new key on the second replica: %d", st)
	}
	var list struct{ Data []keyView }
	b.call(t, "GET", "/admin/keys", batchKey, "", &list)
	if len(list.Data) != 3 || list.Data[2].Name != "team-a" || list.Data[2].Key != "" {
		t.Errorf("list %+v: want frontend, ops and team-a without its secret", list.Data)
	}
	var budgets struct{ Data []map[string]any }
	b.call(t, "GET", "/admin/budgets", batchKey, "", &budgets)
	if len(budgets.Data) != 1 || budgets.Data[0]["key"] != "team-a" || budgets.Data[0]["dollars"] != 50.0 {
		t.Errorf("budgets %+v", budgets.Data)
	}

	if st := a.call(t, "PATCH", "/admin/keys/team-a", batchKey, `{"models":["other-model"]}`, nil); st != http.StatusBadRequest {
		t.Errorf("patch to a model not configured: %d", st)
	}
	if st := a.call(t, "PATCH", "/admin/keys/team-a", batchKey, `{"models":["mock-gpt"],"limit":{}}`, nil); st != http.StatusBadRequest {
		t.Errorf("patch with a misspelt field: %d", st)
	}
	if st := a.call(t, "PATCH", "/admin/keys/frontend", batchKey, `{"admin":true}`, nil); st != http.StatusConflict {
		t.Errorf("patching a config key: %d, want 409", st)
	}
	if st := a.call(t, "POST", "/admin/keys", batchKey, `{"name":"team-a"}`, nil); st != http.StatusConflict {
		t.Errorf("a second team-a: %d, want 409", st)
	}

	if st := a.call(t, "DELETE", "/admin/keys/team-a", batchKey, "", nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	if st := a.call(t, "POST", "/v1/stream", secret, stream, nil); st != http.StatusUnauthorized {
		t.Errorf("the revoked key on the replica that revoked it: %d, want 401", st)
	}
	waitKeys(t, a, b)
	if st := b.call(t, "POST", "/v1/stream", secret, stream, nil); st != http.StatusUnauthorized {
		t.Errorf("the revoked key on the second replica: %d, want 401", st)
	}
	if st := b.call(t, "POST", "/v1/stream", frontendKey, stream, nil); st != http.StatusOK {
		t.Errorf("a config key: %d", st)
	}
	var got keyView
	if b.call(t, "GET", "/admin/keys/team-a", batchKey, "", &got); got.RevokedAt == "" {
		t.Errorf("the revoked key shows %+v", got)
	}
	logs := a.logs.String()
	if strings.Contains(logs, secret) || !strings.Contains(logs, `"msg":"admin: key created","key":"team-a","by":"ops"`) || !strings.Contains(logs, `"msg":"admin: key revoked"`) {
		t.Errorf("the audit lines are missing, or the secret is logged:\n%s", logs)
	}
}

// TestRuntimeKeysNeedAdmin: the key endpoints refuse keys without admin,
// a runtime key made with admin may use them, and one without may not.
func TestRuntimeKeysNeedAdmin(t *testing.T) {
	h := newHarness(t, keysAdminConfig(pgtest.Start(t).DSN))
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/admin/keys", ""}, {"POST", "/admin/keys", `{"name":"x"}`}, {"PATCH", "/admin/keys/x", `{}`}, {"DELETE", "/admin/keys/x", ""}, {"GET", "/admin/usage", ""},
	} {
		if st := h.call(t, r.method, r.path, frontendKey, r.body, nil); st != http.StatusForbidden {
			t.Errorf("%s %s with a key without admin: %d, want 403", r.method, r.path, st)
		}
		if st := h.call(t, r.method, r.path, "", r.body, nil); st != http.StatusUnauthorized {
			t.Errorf("%s %s with no key: %d, want 401", r.method, r.path, st)
		}
	}
	var admin, plain keyView
	h.call(t, "POST", "/admin/keys", batchKey, `{"name":"robot","admin":true}`, &admin)
	h.call(t, "POST", "/admin/keys", batchKey, `{"name":"user"}`, &plain)
	if st := h.call(t, "GET", "/admin/keys", admin.Key, "", nil); st != http.StatusOK {
		t.Errorf("a runtime admin key: %d", st)
	}
	if st := h.call(t, "GET", "/admin/keys", plain.Key, "", nil); st != http.StatusForbidden {
		t.Errorf("a runtime key without admin: %d, want 403", st)
	}
}
