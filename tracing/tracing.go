// Package tracing holds what the gateway's OpenTelemetry traces are made
// of, for the packages that add to them: child spans that cost nothing
// when a request is not traced, the propagator that continues a client's
// trace and passes it on to upstreams, and the attribute names (those of
// the GenAI semantic conventions, and the gateway's own). Only the
// OpenTelemetry API is imported here; the SDK and exporter are the
// process's (gateway.newTracerProvider).
//
// A request's tree is its server span (middleware.Trace), and under it
// one span for admission, one per upstream attempt (retries and
// fallbacks are siblings) and one for the relay to the client. No span is
// touched per token: the first token is an event, once.
package tracing

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Scope names the gateway's spans' instrumentation scope.
const Scope = "github.com/streamgate/gateway"

// DefaultServiceName is the service's name when neither the config nor
// OTEL_SERVICE_NAME gives one.
const DefaultServiceName = "streamgate"

// Propagator is the trace context the gateway continues from clients
// and passes on to upstreams: W3C Trace Context and Baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// None is the span of a request that is not traced: it does nothing.
var None trace.Span = noop.Span{}

// Recording reports whether ctx's span is recording: whether building
// a child's name and attributes is worth the work.
func Recording(ctx context.Context) bool { return trace.SpanFromContext(ctx).IsRecording() }

// Start starts a span named name under ctx's span, from the same tracer
// provider, if that span is recording; otherwise it returns ctx and a
// span that does nothing, having done no work: an untraced request (no
// tracing, or not sampled) pays one context lookup.
func Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, None
	}
	return parent.TracerProvider().Tracer(Scope).Start(ctx, name, trace.WithSpanKind(kind))
}

// Detach is ctx's span in a context of its own, for work that outlives
// the request (a generated stream): its spans stay in the request's
// trace, its cancellation is not the request's.
func Detach(ctx context.Context) context.Context {
	span := trace.SpanFromContext(ctx)
	if !span.SpanContext().IsValid() {
		return context.Background()
	}
	return trace.ContextWithSpan(context.Background(), span)
}
