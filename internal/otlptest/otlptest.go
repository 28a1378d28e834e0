// Package otlptest is an in-process OpenTelemetry collector for tests:
// it receives OTLP trace exports over HTTP (protobuf) or gRPC on
// 127.0.0.1 and keeps the spans, as a real collector would receive them
// from the gateway's exporter.
package otlptest

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Span is a received span with what tests ask of it decoded.
type Span struct {
	*tracepb.Span
	// Service is its resource's service.name.
	Service string
}

// TraceID and SpanID, ParentID are the span's ids in hex, as
// traceparent writes them.
func (s Span) TraceID() string  { return hex.EncodeToString(s.Span.TraceId) }
func (s Span) SpanID() string   { return hex.EncodeToString(s.Span.SpanId) }
func (s Span) ParentID() string { return hex.EncodeToString(s.Span.ParentSpanId) }

// Attr is the value of attribute key, and whether the span has it.
func (s Span) Attr(key string) (*commonpb.AnyValue, bool) { return find(s.Attributes, key) }

// Str is a string attribute's value ("" when absent).
func (s Span) Str(key string) string {
	v, _ := s.Attr(key)
	return v.GetStringValue()
}

// Int is an int attribute's value (0 when absent).
func (s Span) Int(key string) int64 {
	v, _ := s.Attr(key)
	return v.GetIntValue()
}

// Events are the names of the span's events, in order.
func (s Span) Events() []string {
	out := make([]string, len(s.Span.Events))
	for i, e := range s.Span.Events {
		out[i] = e.Name
	}
	return out
}

func find(kvs []*commonpb.KeyValue, key string) (*commonpb.AnyValue, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Receiver collects the spans exported to it.
type Receiver struct {
	// URL is the base URL to configure the exporter with
	// (http://127.0.0.1:port).
	URL string

	mu    sync.Mutex
	spans []Span
	// Headers are the last export's request headers (HTTP) or metadata
	// (gRPC): what a collector's auth sees.
	headers map[string][]string
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Header is a header of the last export.
func (r *Receiver) Header(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headers[name]
}

func (r *Receiver) add(req *coltracepb.ExportTraceServiceRequest, headers map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.headers = headers
	for _, rs := range req.ResourceSpans {
		v, _ := find(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, Span{Span: s, Service: v.GetStringValue()})
			}
		}
	}
}

// NewHTTP starts a receiver of OTLP/HTTP (protobuf) exports at
// POST /v1/traces, closed when the test ends.
func NewHTTP(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces of application/x-protobuf", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(req.Body)
		var msg coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &msg)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.add(&msg, req.Header.Clone())
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// NewGRPC starts a receiver of OTLP/gRPC exports, closed when the test
// ends.
func NewGRPC(t testing.TB) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{URL: "http://" + ln.Addr().String()}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, traceService{r: r})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() { srv.Stop(); <-done })
	return r
}

type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traceService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.r.add(req, metadataOf(ctx))
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// metadataOf is a gRPC call's incoming metadata as headers.
func metadataOf(ctx context.Context) map[string][]string {
	md, _ := metadata.FromIncomingContext(ctx)
	return md
}
