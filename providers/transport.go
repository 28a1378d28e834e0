package providers

import (
	"net"
	"net/http"
	"time"
)

// NewTransport returns the HTTP transport the upstream providers share the
// settings of: connect timeout, many pooled connections to one host, small
// connection buffers (every open stream holds its own), no compression.
func NewTransport(connect time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = connect
	// Many concurrent streams go to the same host: keep their connections.
	t.MaxIdleConnsPerHost = 256
	// Each open stream holds its connection's buffers. The request goes
	// out in a few writes, and stream readers read 4 KiB at a time straight
	// through a small read buffer: 1 KiB each saves 6 KiB per stream over
	// the defaults.
	t.WriteBufferSize = 1 << 10
	t.ReadBufferSize = 1 << 10
	// A compressed event stream can be held back by the upstream's
	// compressor; ask for identity.
	t.DisableCompression = true
	return t
}
