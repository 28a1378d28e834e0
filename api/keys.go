package api

import (
	"encoding/json"
	"unsafe"
)

// ObjectKeys calls fn with each top-level key of b and whether its value
// is null, in order, stopping at fn's first error. b must be valid JSON,
// as it is once json.Unmarshal has accepted it: the dialects check a
// body's top-level fields this way after decoding it, instead of decoding
// it a second time into a map (a copy of every value, an allocation per
// key). A value that is not an object has no keys.
//
// key is valid only during the call: it may share b's memory. Keep it
// with strings.Clone.
func ObjectKeys(b []byte, fn func(key string, null bool) error) error {
	i := space(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil
	}
	i++
	for {
		i = space(b, i)
		if i >= len(b) || b[i] == '}' {
			return nil
		}
		end, decode := stringEnd(b, i)
		var key string
		if decode {
			if err := json.Unmarshal(b[i:end], &key); err != nil {
				return err
			}
		} else if end-i > 2 {
			key = unsafe.String(&b[i+1], end-i-2)
		}
		i = space(b, space(b, end)+1) // past the colon
		if i >= len(b) {
			return nil
		}
		vend := valueEnd(b, i)
		if err := fn(key, string(b[i:vend]) == "null"); err != nil {
			return err
		}
		i = space(b, vend)
		if i < len(b) && b[i] == ',' {
			i++
		}
	}
}

// space skips JSON whitespace from i.
func space(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i]
// (a quote), and whether it needs decoding: it holds an escape, or bytes
// beyond ASCII (which json.Unmarshal checks, mending invalid UTF-8).
func stringEnd(b []byte, i int) (int, bool) {
	decode := false
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '\\':
			decode = true
			i++
		case c == '"':
			return i + 1, decode
		case c >= 0x80:
			decode = true
		}
	}
	return len(b), decode
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i, _ = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}
