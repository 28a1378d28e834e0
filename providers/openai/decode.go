package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/streamgate/gateway/providers"
)

// This file decodes one chat.completion.chunk. Nearly every chunk of a
// stream has one of a few shapes (a content delta, a finish reason, a usage
// report), and decoding those through encoding/json's reflection was the
// largest cost of relaying a token. decodeChunk reads them with a small
// scanner, and hands anything else (tool calls, errors, keys it does not
// know for sure) to encoding/json and go-openai's own types. Fuzzing checks
// that both paths agree.
//
// A stream decodes with a textBuffer: the delta's text (content,
// reasoning) then borrows the event's bytes, or the buffer's when it had
// escapes, instead of being copied into a new string. That copy was the
// last allocation per relayed token; providers.Chunk allows it (its text
// is valid until the next Recv).

// errFallback means the fast path declines a chunk: decode it fully.
var errFallback = errors.New("fallback")

// decodeChunk fills c from the JSON of one chunk; c owns its strings.
func decodeChunk(data []byte, c *providers.Chunk) error {
	return decodeInto(data, c, nil)
}

// textBuffer holds the unescaped text of a stream's latest chunk, and the
// shape of the latest chunk the scanner read in full.
type textBuffer struct {
	b     []byte
	shape shape
}

// shape is a chunk with one delta text, kept to read the next chunks of
// its stream with two comparisons. An upstream sends every token of an
// answer in the same frame (same id, created, model, index, the same
// nulls) with only the text changed: a chunk that has the shape's bytes
// before the text and after it, and a well-formed string between, decodes
// as the shape's chunk with that string as its text, since the scanner
// reads left to right and nothing in a string changes how it reads what
// follows. Reading the whole object again cost 600 ns a token; the
// comparisons cost a tenth of that (BenchmarkDecodeChunk).
type shape struct {
	b []byte // the chunk; nil for none
	// b[start:end] is the text, between its quotes.
	start, end int
	reasoning  bool // the text is the reasoning, not the content
	// rest is the chunk without its text: a finish reason at most.
	finishReason string
}

// maxShape bounds the chunk a shape keeps: usual frames are 150 to 400
// bytes, and a stream holds its shape for its whole life.
const maxShape = 1 << 10

// read decodes data as the shape's chunk if it is one, into c, the text
// borrowed as the scanner's is.
func (sh *shape) read(data []byte, c *providers.Chunk, tb *textBuffer) bool {
	if sh.b == nil {
		return false
	}
	pre, suf := sh.b[:sh.start], sh.b[sh.end:]
	last := len(data) - len(suf) // where the text's closing quote must be
	if last < len(pre) || !bytes.Equal(data[:len(pre)], pre) || !bytes.Equal(data[last:], suf) {
		return false
	}
	s := scanner{b: data, i: sh.start - 1, text: tb}
	text, err := s.deltaText()
	if err != nil || s.i != last+1 {
		return false // not one well-formed string: the scanner decides
	}
	*c = providers.Chunk{FinishReason: sh.finishReason}
	if sh.reasoning {
		c.Reasoning = text
	} else {
		c.Content = text
	}
	return true
}

// keep makes data the shape if the scanner found it one: one delta text
// and otherwise nothing but a finish reason.
func (sh *shape) keep(data []byte, s *scanner, c *providers.Chunk) {
	if s.texts != 1 || len(data) > maxShape || c.Usage != nil || c.ToolCalls != nil {
		return
	}
	sh.b = append(sh.b[:0], data...)
	sh.start, sh.end = s.textStart, s.textEnd
	sh.reasoning = s.textIsReasoning
	sh.finishReason = c.FinishReason
}

// maxKeptText bounds the text buffer a stream keeps between chunks: a
// rare huge delta is not held for the rest of the stream.
const maxKeptText = 16 << 10

// decodeInto fills c from the JSON of one chunk. With tb, c's Content and
// Reasoning borrow data or tb, valid until the next call with tb; without,
// they are copies.
func decodeInto(data []byte, c *providers.Chunk, tb *textBuffer) error {
	*c = providers.Chunk{}
	d := scanner{b: data, text: tb}
	if tb != nil {
		if cap(tb.b) > maxKeptText {
			tb.b = nil
		}
		tb.b = tb.b[:0]
		if tb.shape.read(data, c, tb) {
			return nil
		}
		tb.b = tb.b[:0]
	}
	err := d.chunk(c)
	if err == nil {
		if tb != nil {
			tb.shape.keep(data, &d, c)
		}
		return nil
	}
	*c = providers.Chunk{}
	return decodeFull(data, c)
}

// fullChunk is a chunk as go-openai types it, plus a possible error.
type fullChunk struct {
	goopenai.ChatCompletionStreamResponse
	Error *goopenai.APIError `json:"error"`
}

// openRouterReasoning is the thinking OpenRouter sends as
// choices[0].delta.reasoning, which go-openai does not know.
type openRouterReasoning struct {
	Choices []struct {
		Delta struct {
			Reasoning *string `json:"reasoning"`
		} `json:"delta"`
	} `json:"choices"`
}

// decodeFull decodes with encoding/json; it also recognises an error object
// sent in place of a chunk.
func decodeFull(data []byte, c *providers.Chunk) error {
	var f fullChunk
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	if f.Error != nil {
		return classify(f.Error, 0)
	}
	if len(f.Choices) > 0 {
		ch := &f.Choices[0]
		c.Content = ch.Delta.Content
		c.Reasoning = ch.Delta.ReasoningContent
		if c.Reasoning == "" {
			var or openRouterReasoning
			if json.Unmarshal(data, &or) == nil && len(or.Choices) > 0 && or.Choices[0].Delta.Reasoning != nil {
				c.Reasoning = *or.Choices[0].Delta.Reasoning
			}
		}
		c.FinishReason = string(ch.FinishReason)
		for _, tc := range ch.Delta.ToolCalls {
			d := providers.ToolCallDelta{ID: tc.ID, Type: string(tc.Type), Name: tc.Function.Name, Arguments: tc.Function.Arguments}
			if tc.Index != nil {
				d.Index = *tc.Index
			}
			c.ToolCalls = append(c.ToolCalls, d)
		}
	}
	c.Usage = usageOf(f.Usage)
	return nil
}

// usageOf is an upstream's usage report as the gateway counts it: totals,
// and the reasoning and cached parts where reported; nil for none.
func usageOf(u *goopenai.Usage) *providers.Usage {
	if u == nil {
		return nil
	}
	out := &providers.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
	if d := u.CompletionTokensDetails; d != nil {
		out.ReasoningTokens = d.ReasoningTokens
	}
	if d := u.PromptTokensDetails; d != nil {
		out.CachedTokens = d.CachedTokens
	}
	return out
}

// scanner reads the JSON of a chunk, declining (errFallback) whatever it
// does not handle exactly as encoding/json would.
type scanner struct {
	b []byte
	i int
	// text, when set, is where delta text is unescaped, and allows
	// borrowing b (see decodeInto).
	text *textBuffer
	// The delta texts read (strings, not nulls), and where the latest
	// lies in b: what makes a shape.
	texts              int
	textStart, textEnd int
	textIsReasoning    bool
}

func (s *scanner) ws() {
	if s.i < len(s.b) && s.b[s.i] > ' ' { // the usual case: compact JSON
		return
	}
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// expect consumes byte c after white space.
func (s *scanner) expect(c byte) error {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != c {
		return errFallback
	}
	s.i++
	return nil
}

// peek returns the next byte after white space, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// object calls field for each key of an object; field must consume the
// value.
func (s *scanner) object(field func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		key, kind, err := s.rawString()
		if err != nil {
			return err
		}
		if kind&escaped != 0 {
			return errFallback
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errFallback
		}
	}
}

// once remembers which of up to 8 named keys an object had, so that a
// repeated key (where encoding/json's merging rules get subtle) is declined.
type once uint8

func (o *once) see(k string, names ...string) error {
	for i, n := range names {
		if n == k {
			if *o&(1<<i) != 0 {
				return errFallback
			}
			*o |= 1 << i
		}
	}
	return nil
}

// known reports whether key is one of names; a key that only matches one
// of them without regard to case is declined, since encoding/json would
// take it.
func known(key []byte, names ...string) (string, error) {
	for _, n := range names {
		if string(key) == n {
			return n, nil
		}
	}
	// names are lower case: a key without upper case or bytes beyond
	// ASCII (the usual id, model, index...) cannot fold to one.
	plain := true
	for _, b := range key {
		if b >= utf8.RuneSelf || b >= 'A' && b <= 'Z' {
			plain = false
			break
		}
	}
	if plain {
		return "", nil
	}
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return "", errFallback
		}
	}
	return "", nil
}

func (s *scanner) chunk(c *providers.Chunk) error {
	var seen once
	err := s.object(func(key []byte) error {
		k, err := known(key, "choices", "usage", "error")
		if err == nil {
			err = seen.see(k, "choices", "usage")
		}
		if err != nil {
			return err
		}
		switch k {
		case "choices":
			return s.choices(c)
		case "usage":
			return s.usage(c)
		case "error":
			return errFallback
		}
		return s.skip()
	})
	if err != nil {
		return err
	}
	if s.peek() != 0 {
		return errFallback
	}
	return nil
}

func (s *scanner) choices(c *providers.Chunk) error {
	// Fields of a previous "choices" do not survive this one, as with
	// encoding/json.
	c.Content, c.Reasoning, c.FinishReason = "", "", ""
	if s.peek() == 'n' {
		return s.literal("null")
	}
	return s.array(func(i int) error {
		if i == 0 {
			return s.choice(c)
		}
		return s.skip() // the gateway asks for one choice
	})
}

// array calls elem for each element of an array; elem must consume it.
func (s *scanner) array(elem func(i int) error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(i); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errFallback
		}
	}
}

func (s *scanner) choice(c *providers.Chunk) error {
	if s.peek() != '{' {
		return errFallback
	}
	var seen once
	return s.object(func(key []byte) error {
		k, err := known(key, "delta", "finish_reason")
		if err == nil {
			err = seen.see(k, "delta", "finish_reason")
		}
		if err != nil {
			return err
		}
		switch k {
		case "delta":
			if s.peek() == 'n' {
				c.Content, c.Reasoning = "", ""
				return s.literal("null")
			}
			var seen once
			return s.object(func(key []byte) error {
				k, err := known(key, "content", "reasoning_content", "reasoning", "tool_calls", "function_call")
				if err == nil {
					err = seen.see(k, "content", "reasoning_content", "reasoning")
				}
				if err != nil {
					return err
				}
				switch k {
				case "content":
					c.Content, err = s.deltaText()
					s.textIsReasoning = false
					return err
				case "reasoning_content", "reasoning":
					// Both in one delta: which wins is the full
					// decoder's rule.
					if seen&(1<<1) != 0 && seen&(1<<2) != 0 {
						return errFallback
					}
					var r string
					if r, err = s.deltaText(); r != "" || k == "reasoning_content" {
						c.Reasoning = r
					}
					s.textIsReasoning = true
					return err
				case "tool_calls", "function_call":
					if s.peek() == 'n' {
						return s.literal("null")
					}
					return errFallback
				}
				return s.skip()
			})
		case "finish_reason":
			c.FinishReason, err = s.finishReason()
			return err
		}
		return s.skip()
	})
}

func (s *scanner) usage(c *providers.Chunk) error {
	if s.peek() == 'n' {
		c.Usage = nil
		return s.literal("null")
	}
	u := c.Usage
	if u == nil {
		u = &providers.Usage{}
	}
	var seen once
	err := s.object(func(key []byte) error {
		k, err := known(key, "prompt_tokens", "completion_tokens", "total_tokens", "completion_tokens_details", "prompt_tokens_details")
		if err == nil {
			err = seen.see(k, "prompt_tokens", "completion_tokens", "total_tokens")
		}
		if k == "completion_tokens_details" || k == "prompt_tokens_details" {
			return errFallback // once a stream, in its last chunk: decode it fully
		}
		if err != nil || k == "" {
			if err == nil {
				err = s.skip()
			}
			return err
		}
		if s.peek() == 'n' {
			return s.literal("null")
		}
		start := s.i
		for s.i < len(s.b) && (s.b[s.i] == '-' || s.b[s.i] >= '0' && s.b[s.i] <= '9') {
			s.i++
		}
		n, err := strconv.Atoi(string(s.b[start:s.i]))
		if err != nil {
			return errFallback
		}
		switch k {
		case "prompt_tokens":
			u.PromptTokens = n
		case "completion_tokens":
			u.CompletionTokens = n
		case "total_tokens":
			u.TotalTokens = n
		}
		return nil
	})
	c.Usage = u
	return err
}

func (s *scanner) literal(lit string) error {
	s.ws()
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return errFallback
	}
	s.i += len(lit)
	return nil
}

// What rawString found in a string.
const (
	escaped  = 1 << iota // a backslash escape
	nonASCII             // bytes beyond ASCII: UTF-8 to check
)

// Classes of the bytes in a JSON string (stringByte).
const (
	plainByte     = iota // needs nothing
	quoteByte            // ends the string
	backslashByte        // starts an escape
	controlByte          // not allowed in a string
	highByte             // part of a UTF-8 sequence
)

// stringByte classes every byte value for rawString.
var stringByte = func() (t [256]uint8) {
	for c := range 0x20 {
		t[c] = controlByte
	}
	t['"'], t['\\'] = quoteByte, backslashByte
	for c := 0x80; c < 0x100; c++ {
		t[c] = highByte
	}
	return t
}()

// rawString returns the bytes between the quotes of a string, escapes
// untouched, and what they hold (escaped, nonASCII).
func (s *scanner) rawString() ([]byte, uint8, error) {
	if err := s.expect('"'); err != nil {
		return nil, 0, err
	}
	b, i := s.b, s.i
	var kind uint8
	for {
		for i < len(b) && stringByte[b[i]] == plainByte { // the scanner's hottest loop
			i++
		}
		if i >= len(b) {
			return nil, 0, errFallback
		}
		switch stringByte[b[i]] {
		case quoteByte:
			raw := b[s.i:i]
			s.i = i + 1
			return raw, kind, nil
		case backslashByte:
			kind |= escaped
			i += 2
		case controlByte:
			return nil, 0, errFallback
		default: // highByte
			kind |= nonASCII
			i++
		}
	}
}

// plainString reports whether a string rawString read is its own value:
// no escapes, valid UTF-8.
func plainString(raw []byte, kind uint8) bool {
	return kind&escaped == 0 && (kind&nonASCII == 0 || utf8.Valid(raw))
}

// optString reads a string or null.
func (s *scanner) optString() (string, error) {
	if s.peek() == 'n' {
		return "", s.literal("null")
	}
	raw, kind, err := s.rawString()
	if err != nil {
		return "", err
	}
	if plainString(raw, kind) {
		return string(raw), nil
	}
	return unescape(raw)
}

// deltaText reads a string or null that is the delta's text: borrowed
// when the scanner has a text buffer, else a copy.
func (s *scanner) deltaText() (string, error) {
	if s.text == nil {
		return s.optString()
	}
	if s.peek() == 'n' {
		return "", s.literal("null")
	}
	raw, kind, err := s.rawString()
	if err != nil {
		return "", err
	}
	s.texts++
	s.textStart, s.textEnd = s.i-1-len(raw), s.i-1
	if len(raw) == 0 {
		return "", nil
	}
	if plainString(raw, kind) {
		return unsafe.String(&raw[0], len(raw)), nil
	}
	// Appending may move the buffer; a string made from it earlier in
	// this chunk keeps the old array alive, so it stays intact.
	start := len(s.text.b)
	out, err := appendUnescaped(s.text.b, raw)
	if err != nil {
		return "", err
	}
	s.text.b = out
	if len(out) == start {
		return "", nil
	}
	return unsafe.String(&out[start], len(out)-start), nil
}

// finishReasons are the reasons upstreams send, kept as constants so
// that reading one does not allocate (a finish reason outlives its chunk
// in the stream's result).
var finishReasons = [...]string{"stop", "length", "tool_calls", "content_filter", "function_call"}

// finishReason reads a finish_reason: a string or null.
func (s *scanner) finishReason() (string, error) {
	if s.peek() == 'n' {
		return "", s.literal("null")
	}
	raw, kind, err := s.rawString()
	if err != nil {
		return "", err
	}
	for _, r := range finishReasons {
		if string(raw) == r {
			return r, nil
		}
	}
	if plainString(raw, kind) {
		return string(raw), nil
	}
	return unescape(raw)
}

// unescape decodes the escapes of a JSON string as encoding/json does,
// invalid UTF-8 and lone surrogates becoming U+FFFD.
func unescape(raw []byte) (string, error) {
	out, err := appendUnescaped(make([]byte, 0, len(raw)), raw)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// appendUnescaped appends the decoded JSON string raw to out.
func appendUnescaped(out, raw []byte) ([]byte, error) {
	for i := 0; i < len(raw); {
		b := raw[i]
		if b != '\\' {
			if b < utf8.RuneSelf {
				out = append(out, b)
				i++
				continue
			}
			r, size := utf8.DecodeRune(raw[i:])
			out = utf8.AppendRune(out, r) // RuneError for invalid bytes
			i += size
			continue
		}
		if i+1 >= len(raw) {
			return out, errFallback
		}
		switch raw[i+1] {
		case '"', '\\', '/':
			out = append(out, raw[i+1])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(raw[i+2:])
			if !ok {
				return out, errFallback
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(raw[min(i+2, len(raw)):]); ok && i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return out, errFallback
		}
		i += 2
	}
	return out, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// numberByte marks the bytes a JSON number is made of.
var numberByte = func() (t [256]bool) {
	for _, c := range "+-.0123456789eE" {
		t[c] = true
	}
	return t
}()

// skip consumes any value.
func (s *scanner) skip() error {
	switch s.peek() {
	case '"':
		_, _, err := s.rawString()
		return err
	case '{':
		return s.object(func([]byte) error { return s.skip() })
	case '[':
		return s.array(func(int) error { return s.skip() })
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	case 0:
		return errFallback
	default: // a number
		start := s.i
		for s.i < len(s.b) && numberByte[s.b[s.i]] {
			s.i++
		}
		if s.i == start {
			return errFallback
		}
		return nil
	}
}
