package tokens

import (
	"strings"
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

// TestCountBounded: an answer that is one megabyte-long word is counted
// (approximately) instead of stalling the tokenizer; ordinary long text
// counts as the tokenizer does on it whole.
func TestCountBounded(t *testing.T) {
	n, err := Count(strings.Repeat("x", 1<<20))
	if err != nil || n < 100000 || n > 400000 {
		t.Errorf("1 MiB word: %d tokens, %v", n, err)
	}
	text := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 200)
	whole := len(must(encoding()).Encode(text, nil, nil))
	if got, _ := Count(text); got != whole {
		t.Errorf("segmented count %d, whole %d", got, whole)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
