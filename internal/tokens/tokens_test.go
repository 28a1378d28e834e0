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

// TestLongWordsAreEstimated: text whose words are longer than any natural
// word (an upstream can send a space every kilobyte, which defeated the
// segments alone: each segment one quadratic word) is estimated at four
// bytes a token, never merged; a prompt is bounded the same way.
func TestLongWordsAreEstimated(t *testing.T) {
	for name, text := range map[string]string{
		"one word":            strings.Repeat("x", 100000),
		"a space every 1 KiB": strings.Repeat(strings.Repeat("y", 1000)+" ", 100),
		"base64-like":         strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", 3000),
	} {
		if got, err := Count(text); err != nil || got != (len(text)+3)/4 && got != len(text)/4+len(text)/maxSegment+1 {
			// Segments are estimated one by one: the total is within a
			// token a segment of bytes/4.
			if diff := got - len(text)/4; err != nil || diff < 0 || diff > len(text)/maxSegment+1 {
				t.Errorf("%s: %d tokens for %d bytes, %v", name, got, len(text), err)
			}
		}
	}
	n, err := Prompt([]providers.Message{{Role: "user", Content: strings.Repeat("z", 1<<20)}})
	if err != nil || n < 1<<18 || n > 1<<18+2000 {
		t.Errorf("a 1 MiB one-word prompt: %d tokens, %v", n, err)
	}
}

// BenchmarkCountHostile counts 256 KiB of words a kilobyte long: before
// long words were estimated, about a second of CPU a stream.
func BenchmarkCountHostile(b *testing.B) {
	text := strings.Repeat(strings.Repeat("x", 1000)+" ", 256)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_, _ = Count(text)
	}
}
