package gateway

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// serveAside serves h on a listener of its own at addr (the profiler,
// metrics), never the public one, until stop is called. name is for the
// log and errors.
func (s *Server) serveAside(name, addr string, h http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listen: %w", name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	s.log.Info(name+" listening", "addr", ln.Addr().String())
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}
