package api

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzObjectKeys: on every object json accepts, ObjectKeys names the keys
// a map decode finds, with the same null flags (the last of a repeated
// key wins, as in the map); on anything else it does not panic.
func FuzzObjectKeys(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { "a" : 1 , "b":null,"c":"x\"}","d":{"e":[1,{"f":"]"}]},"g":[],"h":true} `,
		`{"\u0061\n":null,"":0}`, `{"a":1,"a":null}`, `[1,2]`, `"s"`, `null`, `{"a":`, `{"a"`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := map[string]bool{}
		err := ObjectKeys(b, func(k string, null bool) error {
			got[k] = null
			return nil
		})
		var want map[string]json.RawMessage
		if json.Unmarshal(b, &want) != nil {
			return // not an object: only no panic is asked
		}
		if err != nil {
			t.Fatalf("ObjectKeys(%q): %v", b, err)
		}
		if want == nil {
			want = map[string]json.RawMessage{}
		}
		if len(got) != len(want) {
			t.Fatalf("ObjectKeys(%q) = %v, want the keys of %v", b, got, want)
		}
		for k, v := range want {
			if null, ok := got[k]; !ok || null != (string(v) == "null") {
				t.Fatalf("ObjectKeys(%q): key %q null=%v present=%v, value %s", b, k, null, ok, v)
			}
		}
	})
}

func TestObjectKeysStopsAtError(t *testing.T) {
	stop := errors.New("stop")
	var seen []string
	err := ObjectKeys([]byte(`{"a":1,"b":2,"c":3}`), func(k string, _ bool) error {
		seen = append(seen, k)
		if k == "b" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || len(seen) != 2 {
		t.Fatalf("err %v after %v, want stop after a and b", err, seen)
	}
}
