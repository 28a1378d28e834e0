// Package discard is a flushable http.ResponseWriter that throws bytes
// away, for benchmarks of the per-token path without a network.
package discard

import "net/http"

// Writer discards what is written to it.
type Writer struct{ h http.Header }

// New returns a Writer.
func New() *Writer { return &Writer{h: http.Header{}} }

func (d *Writer) Header() http.Header         { return d.h }
func (d *Writer) Write(p []byte) (int, error) { return len(p), nil }
func (d *Writer) WriteHeader(int)             {}
func (d *Writer) Flush()                      {}
