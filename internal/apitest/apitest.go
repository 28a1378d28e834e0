// Package apitest checks what a dialect's request decoder made of a body,
// for the dialects' fuzz targets.
package apitest

import (
	"strings"
	"testing"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// CheckDecoded fails t unless the decoder either accepted body as a
// bounded request (messages, max_tokens within maxTokens, at most
// maxStop stop sequences) or refused it with a 4xx whose message names none of
// leaks (Go package and type names): a client is told what it sent wrong
// in its own terms.
func CheckDecoded(t *testing.T, body []byte, req *providers.Request, e *failure.Error, maxTokens, maxStop int, leaks ...string) {
	t.Helper()
	if e == nil {
		// No messages is only for what an upstream speaking the API
		// reads itself (an item_reference), which any other refuses.
		native := req.Native != nil && len(req.Native.Only) > 0
		if (len(req.Messages) == 0 && !native) || req.MaxTokens < 0 || req.MaxTokens > maxTokens || len(req.Stop) > maxStop {
			t.Fatalf("accepted %q as %+v", body, req)
		}
		return
	}
	if e.Status < 400 || e.Status > 499 || e.Message == "" || e.Code == "" {
		t.Fatalf("refusal %+v", e)
	}
	for _, leak := range append(leaks, "api.", "struct", "Sampling", "json: ", "providers.") {
		if strings.Contains(e.Message, leak) {
			t.Fatalf("message %q names Go internals (%s)", e.Message, leak)
		}
	}
}
