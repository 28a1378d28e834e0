package relay

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/streamgate/gateway/providers"
)

// TestTallyKeepsBoundedText: a stream once kept its whole answer in
// memory to count it (52 MB for a 52 MB answer). It keeps maxKept bytes
// and measures the rest; usage still covers all of it.
func TestTallyKeepsBoundedText(t *testing.T) {
	var tl tally
	word := strings.Repeat("word ", 200) // 1000 bytes
	for range 4000 {                     // 4 MB
		if _, err := tl.add(&providers.Chunk{Content: word}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tl.add(&providers.Chunk{FinishReason: "stop"}); err != nil {
		t.Fatal(err)
	}
	if len(tl.answer) > maxKept || cap(tl.answer) > 2*maxKept {
		t.Errorf("kept %d bytes (capacity %d), bound %d", len(tl.answer), cap(tl.answer), maxKept)
	}
	res, err := tl.end(io.EOF, &providers.Request{Messages: []providers.Message{{Role: "user", Content: "hi"}}})
	if err != nil || !res.UsageEstimated || res.Usage.CompletionTokens < 700000 {
		t.Errorf("usage %+v (estimated %v), %v: want about 800000 completion tokens", res.Usage, res.UsageEstimated, err)
	}
}

// TestTallyRefusesBadToolIndexes: an index outside 0..MaxToolCalls-1 is a
// malformed stream.
func TestTallyRefusesBadToolIndexes(t *testing.T) {
	for _, idx := range []int{-1, MaxToolCalls, 3000000} {
		var tl tally
		_, err := tl.add(&providers.Chunk{ToolCalls: []providers.ToolCallDelta{{Index: idx, Name: "f"}}})
		if !errors.Is(err, providers.ErrMalformed) {
			t.Errorf("index %d: %v", idx, err)
		}
	}
}
