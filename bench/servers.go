package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/streamgate/gateway/providers/mock"
)

// serve runs h on addr until ctx ends, writing "listening on ADDR" to out
// once it accepts connections, so the process that started it learns the
// port.
func serve(ctx context.Context, addr string, h http.Handler, h2c bool, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		// Streams per connection: the load generator opens more
		// connections past this.
		srv.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 1000}
	}
	fmt.Fprintf(out, "listening on %s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return errors.Join(err, srv.Close())
	}
	return nil
}

// ServeMock runs the mock upstream (OpenAI's wire format) on addr.
func ServeMock(ctx context.Context, addr string, h2c bool, out io.Writer) error {
	return serve(ctx, addr, mock.Handler(mock.Defaults()), h2c, out)
}

// ServeBaseline runs the yardstick: a bare httputil.ReverseProxy that
// flushes every write and understands nothing of what it relays.
func ServeBaseline(ctx context.Context, addr, upstream string, h2c bool, out io.Writer) error {
	u, err := url.Parse(upstream)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	// The same connection pool settings as the gateway's openai provider.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	t.DisableCompression = true
	rp.Transport = t
	return serve(ctx, addr, rp, h2c, out)
}

// collector is an OTLP/HTTP trace collector that accepts every export
// and keeps nothing, for the traced target: what is measured is the
// gateway's side of tracing (spans, batching, encoding, sending).
type collector struct {
	URL string
	srv *http.Server
}

func startCollector() (*collector, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &collector{URL: "http://" + ln.Addr().String(), srv: &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			// An empty ExportTraceServiceResponse: everything accepted.
			w.Header().Set("Content-Type", "application/x-protobuf")
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

// Close stops the collector.
func (c *collector) Close() error { return c.srv.Close() }
