package gateway

import (
	"net/http"
	"net/http/pprof"
)

// servePprof serves Go's profiler on its own listener (never on the public
// one) until stop is called. The address was checked to be loopback.
func (s *Server) servePprof(addr string) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return s.serveAside("pprof", addr, mux)
}
