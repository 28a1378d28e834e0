package openai

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
)

// eventReader reads the data lines of a Server-Sent Events stream. It
// skips comments (keep-alives), blank lines and the other fields, and
// returns each "data:" payload without copying when the line fits its
// buffer.
type eventReader struct {
	br *bufio.Reader
	// onIdle, when set, is called before a read that would wait for the
	// network: no complete line is buffered.
	onIdle func()
	// long gathers a line longer than the buffer, up to maxLine.
	long    []byte
	maxLine int
}

// errLineTooLong means an upstream sent one line over the limit.
var errLineTooLong = errors.New("upstream sent an event line over the size limit")

// readers keeps the 4 KiB buffered readers of streams that ended, for the
// next: a fifth of the bytes a stream allocated was this buffer.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

// errReaderReleased is what a released reader returns: a bug in its
// caller, never seen by a client in a correct program.
var errReaderReleased = errors.New("openai: event reader used after its stream was closed")

func newEventReader(r io.Reader, maxLine int) *eventReader {
	// 4 KiB: an idle stream holds this buffer for its whole life, and
	// longer lines are gathered in long.
	br := readers.Get().(*bufio.Reader)
	br.Reset(r)
	return &eventReader{br: br, maxLine: maxLine}
}

// release gives the reader's buffer back for another stream. Nothing
// read from it may be used after: payloads are slices of the buffer (the
// decoders copy what they keep).
func (r *eventReader) release() {
	if r.br != nil {
		r.br.Reset(nil)
		readers.Put(r.br)
		r.br = nil
	}
}

// next returns the payload of the next data line, valid until the next
// call; io.EOF when the body ended between lines.
func (r *eventReader) next() ([]byte, error) {
	for {
		line, err := r.line()
		if err != nil {
			return nil, err
		}
		if payload, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if len(payload) > 0 && payload[0] == ' ' {
				payload = payload[1:]
			}
			return payload, nil
		}
	}
}

// line returns the next line without its line ending.
func (r *eventReader) line() ([]byte, error) {
	if r.br == nil {
		return nil, errReaderReleased
	}
	if r.onIdle != nil && !r.lineBuffered() {
		r.onIdle()
	}
	line, err := r.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		r.long = append(r.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(r.long) > r.maxLine {
				return nil, fmt.Errorf("%w (%d bytes)", errLineTooLong, r.maxLine)
			}
			line, err = r.br.ReadSlice('\n')
			r.long = append(r.long, line...)
		}
		line = r.long
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			// The body ended inside a line: the stream was cut.
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// lineBuffered reports whether a whole line is already in the buffer, so
// that reading it will not wait.
func (r *eventReader) lineBuffered() bool {
	n := r.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := r.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}
