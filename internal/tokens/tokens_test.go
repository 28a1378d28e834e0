package tokens

import (
	"testing"

	"github.com/streamgate/gateway/providers"
)

func TestCount(t *testing.T) {
	for text, want := range map[string]int{"": 0, "hello world": 2, "Hello! How can I help you today?": 9} {
		if got, err := Count(text); err != nil || got != want {
			t.Errorf("Count(%q) = %d, %v; want %d", text, got, err, want)
		}
	}
	// system "be brief" and user "hello world": 3 + (3+1+2) + (3+1+2) = 15.
	n, err := Prompt([]providers.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hello world"}})
	if err != nil || n != 15 {
		t.Errorf("Prompt = %d, %v; want 15", n, err)
	}
}
