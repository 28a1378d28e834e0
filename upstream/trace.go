package upstream

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/tracing"
)

// startAttempt starts the client span of attempt n (counted from 1) of
// operation op on dep, under the request's span in ctx, named as the
// GenAI conventions name it ("chat gpt-4o"). Its context is what the
// attempt runs under, so the upstream request carries its traceparent.
// Untraced, it returns ctx and tracing.None at no cost.
func startAttempt(ctx context.Context, op string, dep deployment, n int) (context.Context, trace.Span) {
	if !tracing.Recording(ctx) {
		return ctx, tracing.None
	}
	ctx, span := tracing.Start(ctx, op+" "+dep.model, trace.SpanKindClient)
	span.SetAttributes(
		tracing.Operation.String(op),
		tracing.System.String(dep.system), tracing.Provider.String(dep.system),
		tracing.RequestModel.String(dep.model),
		tracing.Route.String(dep.providerName),
		tracing.Attempt.Int(n),
	)
	return ctx, span
}

// endAttempt ends an attempt's span that failed with err (nil: it
// succeeded); parent is the request's context, which says whether the
// client left.
func endAttempt(parent context.Context, span trace.Span, err error) {
	spanFailed(parent, span, err)
	span.End()
}

// spanFailed records on an attempt's span that it failed with err: its
// error code (error.type) and, for an upstream's answer, its status. The
// error's text stays out: an upstream may quote the prompt in it.
func spanFailed(parent context.Context, span trace.Span, err error) {
	if err == nil || span == nil || !span.IsRecording() {
		return
	}
	fe := failure.Classify(parent, err)
	span.SetAttributes(tracing.ErrorType.String(fe.Code), tracing.ErrorCode.String(fe.Code))
	if fe.Status > 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", fe.Status))
	}
	span.SetStatus(codes.Error, fe.Code)
}

// event adds a retry or fallback event to the request's span: which
// error it follows, where the next attempt goes and after what wait.
func (s *Stream) event(name string, lastErr error, wait time.Duration) {
	span := trace.SpanFromContext(s.parent)
	if !span.IsRecording() {
		return
	}
	dep := s.routes[s.route]
	span.AddEvent(name, trace.WithAttributes(
		tracing.Attempt.Int(s.attempt.Attempts+1),
		tracing.Route.String(dep.providerName),
		tracing.RequestModel.String(dep.model),
		tracing.ErrorType.String(failure.Classify(s.parent, lastErr).Code),
		tracing.Wait.Float64(float64(wait.Microseconds())/1000),
	))
}
