package providers

import (
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamgate/gateway/tracing"
)

// NewTransport returns the HTTP transport the upstream providers share the
// settings of: connect timeout, many pooled connections to one host, small
// connection buffers (every open stream holds its own), no compression.
// Plain-HTTP upstreams are served on the caller's goroutine (h1.go), the
// rest by net/http's Transport.
func NewTransport(connect time.Duration) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Connections that can tell a stream's reader when it is about to
	// wait (waitconn.go).
	dial := dialWaiting((&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext)
	t.DialContext = dial
	t.TLSHandshakeTimeout = connect
	// Many concurrent streams go to the same host: keep their connections.
	t.MaxIdleConnsPerHost = 256
	// Each open stream holds its connection's buffers. The request goes
	// out in a few writes, and a stream reader's connection reads ahead
	// into a pooled buffer (waitconn.go), held only while events flow:
	// 1 KiB each saves 6 KiB per stream over the defaults.
	t.WriteBufferSize = 1 << 10
	t.ReadBufferSize = 1 << 10
	// A compressed event stream can be held back by the upstream's
	// compressor; ask for identity.
	t.DisableCompression = true
	// Plain-HTTP upstreams on the caller's goroutine (h1.go).
	return newH1Transport(dial, t)
}

// Traced wraps rt so that each upstream request carries the W3C trace
// context (traceparent, tracestate, baggage) of the span its context
// holds: the upstream attempt's, when the request is traced. Without a
// span it passes the request through untouched, at no cost.
func Traced(rt http.RoundTripper) http.RoundTripper { return traced{rt} }

type traced struct{ rt http.RoundTripper }

func (t traced) RoundTrip(req *http.Request) (*http.Response, error) {
	if !trace.SpanContextFromContext(req.Context()).IsValid() {
		return t.rt.RoundTrip(req)
	}
	// A RoundTripper must not change the request it is given.
	out := req.Clone(req.Context())
	tracing.Propagator.Inject(out.Context(), propagation.HeaderCarrier(out.Header))
	return t.rt.RoundTrip(out)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport underneath.
func (t traced) CloseIdleConnections() {
	if c, ok := t.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
