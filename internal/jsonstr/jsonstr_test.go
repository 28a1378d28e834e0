package jsonstr

import (
	"encoding/json"
	"testing"
)

func TestAppendRoundTrips(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "new\nline\r\ttab", "\x00\x01\x1f\x7f",
		"héllo wörld 日本語 😀", "bad \xff utf8", "line\u2028sep\u2029", "<html>&amp;",
	} {
		out := Append(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("Append(%q) = %s: not JSON: %v", s, out, err)
		}
		want := s
		if s == "bad \xff utf8" {
			want = "bad \ufffd utf8"
		}
		if got != want {
			t.Errorf("Append(%q) decodes to %q", s, got)
		}
	}
}

func FuzzAppend(f *testing.F) {
	f.Add("hello \"world\"\n")
	f.Fuzz(func(t *testing.T, s string) {
		out := Append(nil, s)
		if b := AppendBytes(nil, []byte(s)); string(b) != string(out) {
			t.Fatalf("AppendBytes(%q) = %s, Append gives %s", s, b, out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("Append(%q) = %s: not JSON: %v", s, out, err)
		}
		want, _ := json.Marshal(s)
		var w string
		_ = json.Unmarshal(want, &w)
		if got != w {
			t.Fatalf("Append(%q) decodes to %q, encoding/json gives %q", s, got, w)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], "token with \"quotes\" ")
	}
}

func BenchmarkAppendBytes(b *testing.B) {
	buf := make([]byte, 0, 64)
	text := []byte("token with \"quotes\" ")
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBytes(buf[:0], text)
	}
}
