package openai

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/streamgate/gateway/providers"
)

// eventReader reads the data lines of a Server-Sent Events stream. It
// skips comments (keep-alives), blank lines and the other fields, and
// returns each "data:" payload without copying when the line fits its
// buffer.
//
// Its buffer is pooled and held only while events flow: when everything
// read has been returned and the last read was small (the upstream sends
// an event at a time: it is paced, or about to pause), the buffer goes
// back to the pool and the read that waits for the upstream's next bytes
// reads into the reader's own 512. A stream idle for a reasoning model's
// long silence, or one of 10,000 open streams, then holds 512 bytes
// instead of 4 KiB (issue 18). Events back to back keep the buffer: no
// pool round trip or extra read per event.
type eventReader struct {
	r io.Reader
	// buf[start:end] is what was read and not yet returned; buf is nil
	// while nothing is buffered.
	buf        *[]byte
	start, end int
	// wait is what a read into an empty reader goes to, unless flowing:
	// the last read returned at least waitSize bytes.
	wait    [waitSize]byte
	flowing bool
	// err is the error a read returned along with data, kept until that
	// data is used up.
	err error
	// onIdle, when set, is called before a read that would wait for the
	// network: no complete line is buffered. With a waiter (the
	// connection reads ahead and can tell) it is called only before a
	// read that goes to the network, and may then run inside that read
	// (see providers/waitconn.go); without one, before every read of the
	// body.
	onIdle func()
	waiter *providers.Waiter
	// long gathers a line longer than the buffer, up to maxLine.
	long     []byte
	maxLine  int
	released bool
}

const (
	// bufSize is the buffer of a stream whose events flow: a chat
	// chunk is 150-300 bytes, and what one read returns fits.
	bufSize = 4 << 10
	// waitSize is what the read that waits for the next event may
	// return: more comes through the pooled buffer.
	waitSize = 512
)

// errLineTooLong means an upstream sent one line over the limit.
var errLineTooLong = errors.New("upstream sent an event line over the size limit")

var buffers = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// errReaderReleased is what a released reader returns: a bug in its
// caller, never seen by a client in a correct program.
var errReaderReleased = errors.New("openai: event reader used after its stream was closed")

func newEventReader(r io.Reader, maxLine int, w *providers.Waiter) *eventReader {
	return &eventReader{r: r, maxLine: maxLine, waiter: w}
}

// release gives the reader's buffer back for another stream. Nothing
// read from it may be used after: payloads are slices of the buffer (the
// decoders copy what they keep).
func (r *eventReader) release() {
	r.drop()
	r.released = true
}

// drop gives the buffer back to the pool; nothing may be buffered.
func (r *eventReader) drop() {
	if r.buf != nil {
		buffers.Put(r.buf)
		r.buf, r.start, r.end = nil, 0, 0
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

// line returns the next line without its line ending, valid until the
// next call.
func (r *eventReader) line() ([]byte, error) {
	if r.released {
		return nil, errReaderReleased
	}
	r.long = r.long[:0]
	notified := false
	for {
		if r.buf != nil {
			b := (*r.buf)[r.start:r.end]
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				r.start += i + 1
				line := b[:i]
				if len(r.long) > 0 {
					r.long = append(r.long, line...)
					line = r.long
				}
				if n := len(line); n > 0 && line[n-1] == '\r' {
					line = line[:n-1]
				}
				return line, nil
			}
		}
		var late func()
		if !notified && r.onIdle != nil {
			if r.waiter != nil && r.waiter.Pending() {
				// The read takes what is read ahead; should it go to
				// the network after all, the connection calls onIdle.
				late = r.onIdle
			} else {
				notified = true
				r.onIdle()
			}
		}
		if r.waiter != nil {
			r.waiter.Arm(late)
		}
		err := r.fill()
		if r.waiter != nil && r.waiter.Disarm() {
			notified = true
		}
		if err != nil {
			if errors.Is(err, io.EOF) && (len(r.long) > 0 || r.start < r.end) {
				// The body ended inside a line: the stream was cut.
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// maxEmptyReads bounds reads that return neither data nor an error, as
// bufio does (io.ErrNoProgress).
const maxEmptyReads = 100

// fill reads more after what is buffered (no complete line).
func (r *eventReader) fill() error {
	if r.err != nil {
		err := r.err
		r.err = nil
		return err
	}
	for range maxEmptyReads {
		var n int
		var err error
		switch {
		case r.buf == nil || (r.start == r.end && !r.flowing):
			// Nothing buffered, and events came one at a time: this read
			// may wait long.
			r.drop()
			n, err = r.r.Read(r.wait[:])
			if n > 0 {
				r.buf = buffers.Get().(*[]byte)
				r.start, r.end = 0, copy(*r.buf, r.wait[:n])
			}
		default:
			b := *r.buf
			if r.start > 0 {
				r.end = copy(b, b[r.start:r.end])
				r.start = 0
			}
			if r.end == len(b) {
				// A line longer than the buffer: gather it.
				if len(r.long)+r.end > r.maxLine {
					return fmt.Errorf("%w (%d bytes)", errLineTooLong, r.maxLine)
				}
				r.long = append(r.long, b...)
				r.end = 0
			}
			n, err = r.r.Read(b[r.end:])
			r.end += n
		}
		if n > 0 {
			r.flowing = n >= waitSize
			r.err = err
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}
