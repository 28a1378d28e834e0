package bench

import (
	"encoding/json"
	"testing"
)

// TestRequestBodyInstructions: each format carries the instructions
// where its API reads them, as many bytes as asked.
func TestRequestBodyInstructions(t *testing.T) {
	for _, tc := range []struct {
		format Format
		get    func(map[string]any) any
	}{
		{FormatResponses, func(m map[string]any) any { return m["instructions"] }},
		{FormatMessages, func(m map[string]any) any { return m["system"] }},
		{FormatChat, func(m map[string]any) any { return m["messages"].([]any)[0].(map[string]any)["content"] }},
	} {
		var m map[string]any
		if err := json.Unmarshal(requestBody(Load{Format: tc.format, Model: "m", Tokens: 1, Instructions: 1000}), &m); err != nil {
			t.Fatalf("%s: %v", tc.format, err)
		}
		if s, _ := tc.get(m).(string); len(s) != 1000 {
			t.Errorf("%s: instructions of %d bytes, want 1000", tc.format, len(s))
		}
	}
}
