package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/providers/mock"
)

var chunkSeeds = []string{
	`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}`,
	`{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}]}`,
	`{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
	`{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":10,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0}}}`,
	`{"choices":[{"delta":{"content":"esc \" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00 \ud800 x"}}]}`,
	`{"choices":[{"delta":{"content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}`,
	`{"error":{"message":"boom","type":"server_error","code":"server_error"}}`,
	`{"Choices":[{"delta":{"content":"case"}}]}`,
	`{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}],"choices":null}`,
	`{"choices":[{"delta":{"content":"raw ` + "\xff\xfe" + ` bytes"}}]}`,
	` { "choices" : [ { "delta" : { "content" : "spaced" } , "finish_reason" : "length" } ] } `,
	`{"usage":{"prompt_tokens":1.5}}`,
	`{"choices":[{"delta":{"content":"x"}}],"usage":{}}`,
	`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Let me think"},"finish_reason":null}]}`,
	`{"id":"c","choices":[{"index":0,"delta":{"reasoning":"hmm","content":""},"finish_reason":null}]}`,
	`{"id":"c","choices":[{"index":0,"delta":{"reasoning":"a","reasoning_content":"b"},"finish_reason":null}]}`,
	`{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":30,"total_tokens":39,"completion_tokens_details":{"reasoning_tokens":20}}}`,
	// Keys that fold to known ones only through Unicode (ſ is s, K is k).
	`{"choices":[{"delta":{"content":"a"},"finiſh_reason":"stop"}],"uſage":{"prompt_tokens":1}}`,
	`{"choices":[{"delta":{"content":"é","reasoning_content":"tÄ"}}],"id":"é"}`,
}

func TestDecodeChunkShapes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want providers.Chunk
	}{
		{chunkSeeds[0], providers.Chunk{Content: "Hello"}},
		{chunkSeeds[2], providers.Chunk{FinishReason: "stop"}},
		{chunkSeeds[3], providers.Chunk{Usage: &providers.Usage{PromptTokens: 9, CompletionTokens: 10, TotalTokens: 19}}},
		{chunkSeeds[4], providers.Chunk{Content: "esc \" \\ / \b\f\n\r\t é 😀 \ufffd x"}},
		{chunkSeeds[5], providers.Chunk{ToolCalls: []providers.ToolCallDelta{{Index: 0, ID: "call_1", Type: "function", Name: "f", Arguments: `{"a"`}}}},
		{chunkSeeds[10], providers.Chunk{Content: "spaced", FinishReason: "length"}},
	} {
		var got providers.Chunk
		if err := decodeChunk([]byte(tc.in), &got); err != nil {
			t.Errorf("decodeChunk(%s): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decodeChunk(%s) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	var c providers.Chunk
	err := decodeChunk([]byte(chunkSeeds[6]), &c)
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Code != "server_error" || pe.Message != "boom" {
		t.Errorf("error chunk: %v", err)
	}
	if err := decodeChunk([]byte(`{"choices":[{"delta":{"content":"cut`), &c); err == nil {
		t.Error("truncated chunk decoded")
	}
}

// FuzzDecodeChunk checks the fast path against encoding/json and go-openai's
// types: on valid JSON both must give the same chunk, or both fail.
func FuzzDecodeChunk(f *testing.F) {
	for _, s := range chunkSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if !json.Valid([]byte(in)) {
			var c providers.Chunk
			_ = decodeChunk([]byte(in), &c) // must not panic
			return
		}
		// Where encoding/json succeeds the fast path must agree exactly.
		// Where it fails the fast path may still succeed: it does not
		// type-check fields it skips (an "id" that is not a string), which
		// should not break a stream; wrong types in the fields it reads
		// are covered by TestDecodeChunkRejects.
		var fast, full providers.Chunk
		errFull := decodeFull([]byte(in), &full)
		if errFull != nil {
			return
		}
		if errFast := decodeChunk([]byte(in), &fast); errFast != nil {
			t.Fatalf("%s: fast path err %v, full decode ok", in, errFast)
		}
		if !reflect.DeepEqual(fast, full) {
			t.Fatalf("%s:\nfast %+v (usage %+v)\nfull %+v (usage %+v)", in, fast, fast.Usage, full, full.Usage)
		}
		// A stream's decoder borrows the text; it must read the same.
		// The buffer holds an earlier chunk's text first, as it does in
		// a stream.
		tb := textBuffer{b: []byte("earlier text")}
		var borrowed providers.Chunk
		if err := decodeInto([]byte(in), &borrowed, &tb); err != nil || !reflect.DeepEqual(borrowed, full) {
			t.Fatalf("%s:\nborrowed %+v %v\nfull %+v", in, borrowed, err, full)
		}
	})
}

// shapeSeeds are pairs of chunks: the first gives a stream its shape, the
// second is read with it.
var shapeSeeds = [][2]string{
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], "Hello", "World", 1)},
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], "Hello", `esc \" \n \u00e9 \ud800`, 1)},
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], "Hello", "", 1)},
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], "Hello", `a"},"finish_reason":"stop`, 1)},
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], "Hello", `a","content":"b`, 1)},
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], "Hello", "raw \xff \x01", 1)},
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], `"Hello"`, "null", 1)},
	{chunkSeeds[0], strings.Replace(chunkSeeds[0], "Hello", `bad \x`, 1)},
	{chunkSeeds[0], chunkSeeds[0][:60]},
	{`{"choices":[{"delta":{"reasoning":"a"}}]}`, `{"choices":[{"delta":{"reasoning":""}}]}`},
	{`{"choices":[{"delta":{"reasoning_content":"a"},"finish_reason":"length"}]}`, `{"choices":[{"delta":{"reasoning_content":"bb"},"finish_reason":"length"}]}`},
	{`{"choices":[{"delta":{"content":"a","reasoning":"b"}}]}`, `{"choices":[{"delta":{"content":"a","reasoning":"c"}}]}`},
	{chunkSeeds[3], chunkSeeds[3]},
	{chunkSeeds[0], `x\"y`},
	{chunkSeeds[0], `x"},"finish_reason":"stop`},
	{chunkSeeds[0], `x","content":"y`},
	{chunkSeeds[0], "\x00"},
}

// FuzzDecodeChunkShape: a chunk read with the shape its stream's previous
// chunk left decodes exactly as the scanner alone decodes it.
func FuzzDecodeChunkShape(f *testing.F) {
	for _, p := range shapeSeeds {
		f.Add(p[0], p[1])
	}
	// The second chunk as it is, and as the text of the first's shape
	// (where the shape's comparisons pass and the string decides).
	f.Fuzz(func(t *testing.T, prev, next string) {
		var tb textBuffer
		var c providers.Chunk
		_ = decodeInto([]byte(prev), &c, &tb)
		nexts := []string{next}
		if sh := tb.shape; sh.b != nil {
			nexts = append(nexts, string(sh.b[:sh.start])+next+string(sh.b[sh.end:]))
		}
		for _, next := range nexts {
			sh := tb.shape
			sh.b = bytes.Clone(sh.b)
			tb := textBuffer{shape: sh}
			var shaped, plain providers.Chunk
			errShaped := decodeInto([]byte(next), &shaped, &tb)
			errPlain := decodeInto([]byte(next), &plain, &textBuffer{})
			if (errShaped == nil) != (errPlain == nil) || !reflect.DeepEqual(shaped, plain) {
				t.Fatalf("after %s, %s:\nwith its shape %+v %v\nwithout %+v %v", prev, next, shaped, errShaped, plain, errPlain)
			}
		}
	})
}

// TestDecodeChunkShapeReads: the seeds' second chunks that fit the shape
// are read by it (so the fuzz test compares something).
func TestDecodeChunkShapeReads(t *testing.T) {
	for _, p := range shapeSeeds[:3] {
		var tb textBuffer
		var c providers.Chunk
		if err := decodeInto([]byte(p[0]), &c, &tb); err != nil || tb.shape.b == nil {
			t.Fatalf("%s: no shape kept (%v)", p[0], err)
		}
		tb.b = tb.b[:0]
		if !tb.shape.read([]byte(p[1]), &c, &tb) {
			t.Errorf("%s: not read by the shape of %s", p[1], p[0])
		}
	}
}

// TestStreamRecvDoesNotAllocate: relaying a token allocates nothing in
// the decoder, escapes or not (the text borrows the stream's buffers).
func TestStreamRecvDoesNotAllocate(t *testing.T) {
	var body bytes.Buffer
	frames := []string{
		`{"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}`,
		`{"choices":[{"index":0,"delta":{"content":"line\nbreak \"quoted\" \u00e9"},"finish_reason":null}]}`,
		`{"choices":[{"index":0,"delta":{"reasoning_content":"think"},"finish_reason":null}]}`,
	}
	const runs = 300
	for i := 0; i <= runs; i++ {
		body.WriteString("data: " + frames[i%len(frames)] + "\n\n")
	}
	s := &stream{body: io.NopCloser(&body), events: newEventReader(&body, 1<<20, nil)}
	defer s.Close()
	want := []string{"Hello", "line\nbreak \"quoted\" é", "think"}
	i := 0
	n := testing.AllocsPerRun(runs, func() {
		c, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Content + c.Reasoning; got != want[i%len(want)] {
			t.Fatalf("chunk %d: %q, want %q", i, got, want[i%len(want)])
		}
		i++
	})
	if n != 0 {
		t.Errorf("Recv allocates %.1f times per chunk, want 0", n)
	}
}

// TestDecodeChunkRejects: a wrong type in a field the gateway reads is an
// error, as with encoding/json.
func TestDecodeChunkRejects(t *testing.T) {
	for _, in := range []string{
		`{"choices":[{"delta":{"content":5}}]}`,
		`{"choices":[{"delta":{"content":"x"},"finish_reason":1}]}`,
		`{"choices":{"delta":{}}}`,
		`{"choices":[{"delta":"x"}]}`,
		`{"usage":{"prompt_tokens":"9"}}`,
		`{"usage":{"total_tokens":1.5}}`,
		`{"usage":[]}`,
		`[1,2]`,
		`{"choices":[{"delta":{"content":"x"}}]} trailing`,
	} {
		var c providers.Chunk
		if err := decodeChunk([]byte(in), &c); err == nil {
			t.Errorf("decodeChunk(%s) = %+v, want an error", in, c)
		}
	}
}

// BenchmarkDecodeChunk: a token's chunk as a stream reads it (its shape
// kept from the chunk before), with the scanner alone, with encoding/json.
func BenchmarkDecodeChunk(b *testing.B) {
	data := []byte(chunkSeeds[0])
	var tb textBuffer
	for _, tc := range []struct {
		name string
		fn   func([]byte, *providers.Chunk) error
	}{
		{"shape", func(data []byte, c *providers.Chunk) error { return decodeInto(data, c, &tb) }},
		{"scanner", decodeChunk},
		{"encoding-json", decodeFull},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var c providers.Chunk
			b.ReportAllocs()
			for b.Loop() {
				if err := tc.fn(data, &c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestEventReader(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	in := ": keep-alive\r\n\r\nevent: message\nid: 3\ndata: one\r\n\ndata:two\n\n" +
		`data: {"choices":[{"delta":{"content":"` + long + `"}}]}` + "\n\ndata: [DONE]\n\n"
	// However the body's reads split it: one byte at a time, half of
	// what was asked, data with the final error.
	for name, src := range map[string]func() io.Reader{
		"whole":    func() io.Reader { return strings.NewReader(in) },
		"bytes":    func() io.Reader { return iotest.OneByteReader(strings.NewReader(in)) },
		"halves":   func() io.Reader { return iotest.HalfReader(strings.NewReader(in)) },
		"data+EOF": func() io.Reader { return iotest.DataErrReader(strings.NewReader(in)) },
	} {
		got := payloads(t, newEventReader(src(), 2<<20, nil))
		if len(got) != 4 || got[0] != "one" || got[1] != "two" || len(got[2]) != len(`{"choices":[{"delta":{"content":""}}]}`)+len(long) || got[3] != "[DONE]" {
			t.Errorf("%s: payloads: %d, %q %q ... %q", name, len(got), got[0], got[1], got[len(got)-1])
		}
	}

	r := newEventReader(strings.NewReader("data: "+long+"\n"), 1<<19, nil)
	if _, err := r.next(); !errors.Is(err, errLineTooLong) {
		t.Errorf("over the cap: %v", err)
	}
	r = newEventReader(strings.NewReader("data: {\"cut"), 1<<10, nil)
	if _, err := r.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut mid-line: %v", err)
	}
}

// TestConnectionsAreReused: after a complete stream the provider leaves
// the connection to the pool, so back-to-back calls share one.
func TestConnectionsAreReused(t *testing.T) {
	var conns atomic.Int32
	ts := httptest.NewUnstartedServer(mock.Handler(mock.Defaults()))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	defer ts.Close()
	p, _ := New(Options{BaseURL: ts.URL + "/v1"})
	for i := 0; i < 5; i++ {
		st, err := p.StreamChat(context.Background(), userRequest("m", "[mock tokens=3]"))
		if err != nil {
			t.Fatal(err)
		}
		if text, _, err := drain(t, st); err != nil || text != "This is a" {
			t.Fatalf("call %d: %q %v", i, text, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 sequential calls opened %d connections, want 1", n)
	}
}

func TestRecordedStreamsDecode(t *testing.T) {
	for _, file := range []string{"openai_content.sse", "openai_toolcall.sse"} {
		raw, err := os.ReadFile("../../gateway/testdata/" + file)
		if err != nil {
			t.Fatal(err)
		}
		for _, ps := range payloads(t, newEventReader(bytes.NewReader(raw), 1<<20, nil)) {
			if ps == "[DONE]" {
				continue
			}
			p := []byte(ps)
			var fast, full providers.Chunk
			if err1, err2 := decodeChunk(p, &fast), decodeFull(p, &full); err1 != nil || err2 != nil || !reflect.DeepEqual(fast, full) {
				t.Errorf("%s: %s\nfast %+v %v\nfull %+v %v", file, p, fast, err1, full, err2)
			}
		}
	}
}

// scriptedReader returns its parts one read at a time (a part longer than
// the read's buffer over several), calling onRead before each read.
type scriptedReader struct {
	parts  []string
	onRead func()
}

func (s *scriptedReader) Read(p []byte) (int, error) {
	s.onRead()
	if len(s.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.parts[0])
	if s.parts[0] = s.parts[0][n:]; s.parts[0] == "" {
		s.parts = s.parts[1:]
	}
	return n, nil
}

// TestEventReaderHoldsNoBufferWhileWaiting: a reader whose events come
// one at a time waits for the next without its 4 KiB buffer (issue 18:
// memory per open stream); events back to back keep the buffer, so that
// they cost no extra read or pool round trip.
func TestEventReaderHoldsNoBufferWhileWaiting(t *testing.T) {
	event := "data: {\"a\":1}\n\n"
	burst := strings.Repeat("data: x\n", 200) // 1,600 bytes
	var r *eventReader
	var held []bool
	src := &scriptedReader{parts: []string{event, event, burst, event}, onRead: func() { held = append(held, r.buf != nil) }}
	r = newEventReader(src, 1<<20, nil)
	n := len(payloads(t, r))
	// Reads: the first event, the second, the burst's first 512 bytes
	// (all without a buffer), the rest of the burst and the last event
	// (with it: the burst came back to back), the end (without).
	want := []bool{false, false, false, true, true, false}
	if n != 203 || !reflect.DeepEqual(held, want) {
		t.Errorf("%d payloads, buffer held at each read %v, want 203 and %v", n, held, want)
	}
}

// payloads reads r to its end and returns every data payload (copied:
// the reader's slices last until its next call).
func payloads(t *testing.T, r *eventReader) []string {
	t.Helper()
	var got []string
	for {
		p, err := r.next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(p))
	}
}
