// Package engine runs a request for any API dialect: it admits it, opens
// its upstream (with routing and retries), relays it or collects it, or
// generates it into a resumable log, and records how it ended, once, for
// limits, metrics and the access log. Dialects decode requests into a
// providers.Request, hand the engine a relay.Format, and write the
// engine's *failure.Error in their own envelope: they own no routing,
// retries or limits.
package engine

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamgate/gateway/admission"
	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/tokens"
	"github.com/streamgate/gateway/ledger"
	"github.com/streamgate/gateway/metrics"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
	"github.com/streamgate/gateway/responsestore"
	"github.com/streamgate/gateway/resumable"
	"github.com/streamgate/gateway/tracing"
	"github.com/streamgate/gateway/upstream"
)

// Engine serves one configuration.
type Engine struct {
	Options
}

// Options are an engine's parts; all are required.
type Options struct {
	Config   *config.Config
	Log      *slog.Logger
	Registry *upstream.Registry
	Admitter *admission.Admitter
	Metrics  *metrics.Metrics
	Hub      *resumable.Hub
	// Responses keeps the Responses API's stored responses.
	Responses responsestore.Store
	// Ledger, when set, gets a row for every request that reached
	// routing.
	Ledger *ledger.Ledger
	Keys   middleware.Keys
	// Redact makes text safe to show and log.
	Redact func(string) string
	// Stopping is cancelled, with failure.ErrShutdown as its cause, when
	// the streams still running must end.
	Stopping context.Context
	// Started is when the process started: the creation time of every
	// model.
	Started time.Time
}

// New returns an engine of opts.
func New(opts Options) *Engine { return &Engine{Options: opts} }

// SSE starts an event stream on w with the configured heartbeat and write
// timeout.
func (e *Engine) SSE(w http.ResponseWriter) *relay.SSE {
	return relay.StartSSE(w, e.Config.Server.HeartbeatInterval.Std(), e.Config.Server.WriteTimeout.Std())
}

// AuthEnabled reports whether requests need a key.
func (e *Engine) AuthEnabled() bool { return e.Config.Auth.AuthEnabled() }

// client is who sent c: its key, or without one its address (gin parses
// it from the headers anew on every call, and a key's limits never use
// it).
func client(c *gin.Context) admission.Client {
	if key := middleware.Get(c).KeyName; key != "" {
		return admission.Client{Key: key}
	}
	return admission.Client{IP: c.ClientIP()}
}

// Model is a model as a client may learn of it.
type Model struct {
	Name, Owner string
	// Unavailable says why the model cannot answer now; "" when it can.
	Unavailable string
}

// Models returns the models c's key may use: those that can answer now
// first (a client that takes the first model gets one that works), each
// group sorted by name.
func (e *Engine) Models(c *gin.Context) []Model {
	cl := client(c)
	var ready, not []Model
	for _, name := range e.Registry.Models() {
		if !e.Admitter.Allows(cl, name) {
			continue
		}
		m := Model{Name: name, Owner: e.Registry.Owner(name)}
		if err := e.Registry.Unavailable(name); err != nil {
			m.Unavailable = e.Redact(err.Error())
			not = append(not, m)
			continue
		}
		ready = append(ready, m)
	}
	return append(ready, not...)
}

// Model returns model if c's key may use it.
func (e *Engine) Model(c *gin.Context, name string) (Model, *failure.Error) {
	for _, m := range e.Models(c) {
		if m.Name == name {
			return m, nil
		}
	}
	return Model{}, notFound(name)
}

// served resolves the model a client named (a model, or an alias of
// one) and checks that c's key may use it, recording it in c's Info: 404
// otherwise, as for a model not configured, so that a key learns nothing
// of the models it is not given.
func (e *Engine) served(c *gin.Context, name string) (string, *middleware.Info, *failure.Error) {
	model := name
	if m := e.Config.Resolve(name); m != "" {
		model = m
	}
	if !e.Registry.Has(model) || !e.Admitter.Allows(client(c), model) {
		return "", nil, notFound(name)
	}
	info := middleware.Get(c)
	info.Model, info.Provider = model, e.Registry.Owner(model)
	return model, info, nil
}

// notFound is the answer for a model that is not served, or not to this
// key: the two look the same.
func notFound(model string) *failure.Error {
	return &failure.Error{Status: http.StatusNotFound, Type: failure.TypeInvalidRequest, Code: "model_not_found", Param: "model",
		Message: "model " + failure.Quote(model) + " does not exist; GET /v1/models lists the models served"}
}

// AdmitReader admits a reader of a stream that key started ("" with auth
// off: the reader's address is the client).
func (e *Engine) AdmitReader(c *gin.Context, key string) (*admission.Ticket, *failure.Error) {
	cl := client(c)
	if key != "" {
		cl.Key = key
	}
	return e.Admitter.AdmitReader(c.Request.Context(), c.Writer.Header(), cl)
}

// Hold is middleware that counts each request against its client's
// concurrency from the moment its headers are in (admission.Hold),
// answering a refusal with write, the dialect's error writer. It goes
// after the dialect's auth, which names the client.
func (e *Engine) Hold(write func(*gin.Context, *failure.Error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		held, fe := e.Admitter.Hold(client(c))
		if fe != nil {
			write(c, fe)
			c.Abort()
			return
		}
		defer e.Admitter.Release(held)
		c.Next()
	}
}

// Call is an admitted request. Exactly one of its Stream, Complete or
// Generate runs it; each settles its admission.
type Call struct {
	e      *Engine
	c      *gin.Context
	info   *middleware.Info
	req    *providers.Request
	model  string
	ticket *admission.Ticket
	// outlive makes a generated stream run to its end whoever reads it.
	outlive bool
	// endpoint labels the call in metrics and the ledger.
	endpoint string
}

// Outlive makes the call, once Generate runs it, go on to its end
// whether or not anyone reads it: for APIs whose runs outlive their
// connection (the Responses API's background). The config's last-reader
// policy does not apply to it.
func (call *Call) Outlive() { call.outlive = true }

// Accept resolves the model named (404 when it is not served, or not to
// this key) and admits the request within its client's limits (rate-limit
// headers are set on c either way).
func (e *Engine) Accept(c *gin.Context, req *providers.Request, name string) (*Call, *failure.Error) {
	model, info, fe := e.served(c, name)
	if fe != nil {
		return nil, fe
	}
	override(req, e.Config.Models[model])
	e.traceRequest(c.Request.Context(), req)
	ctx, span := tracing.Start(c.Request.Context(), tracing.SpanAdmission, trace.SpanKindInternal)
	t, fe := e.Admitter.Admit(ctx, c.Writer.Header(), client(c), model, req)
	endAdmission(span, fe)
	if fe != nil {
		return nil, fe
	}
	return &Call{e: e, c: c, info: info, req: req, model: model, ticket: t}, nil
}

// Request is the engine's request of the call: a dialect may still add
// to it before running the call.
func (call *Call) Request() *providers.Request { return call.req }

// running is an upstream call: ctx is its context, cancel ends it with a
// cause, release frees it once the stream is over.
type running struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	release func()
	st      *upstream.Stream
}

// open starts the upstream call under parent, cut short also by the
// server's shutdown. While it opens the client waits: its leaving cancels
// the call whatever parent is. On failure the admission is settled and
// the error is ready for the client.
func (call *Call) open(parent context.Context) (running, *failure.Error) {
	e := call.e
	ctx, cancel, release := e.upstreamContext(parent)
	run := running{ctx: ctx, cancel: cancel, release: release}
	if rctx := call.c.Request.Context(); parent != rctx {
		defer context.AfterFunc(rctx, func() { cancel(context.Canceled) })()
	}
	st, a, err := e.Registry.Open(ctx, call.req, call.model, call.info.RequestID)
	routed(call.info, a)
	if err != nil {
		fe := failure.Classify(ctx, err)
		fe.Message = e.Redact(fe.Message)
		run.release()
		call.ticket.Unused()
		call.info.Endpoint, call.info.Status = call.endpoint, fe.Status
		call.info.ErrorCode = fe.Code
		e.record(call.info)
		return run, fe
	}
	run.st = st
	return run, nil
}

// upstreamContext is the context of an upstream call under parent, cut
// short also by the server's shutdown (with its cause); release frees it.
func (e *Engine) upstreamContext(parent context.Context) (ctx context.Context, cancel context.CancelCauseFunc, release func()) {
	ctx, cancel = context.WithCancelCause(parent)
	stop := context.AfterFunc(e.Stopping, func() { cancel(context.Cause(e.Stopping)) })
	return ctx, cancel, func() { stop(); cancel(context.Canceled) }
}

// finish records how a stream of endpoint ended, in info (the access
// log), the metrics, the ledger and the admission. streamed says the
// client was answered 200 before the end (a stream, whatever its end);
// otherwise a failure is answered with its own status.
func (call *Call) finish(info *middleware.Info, o *relay.Outcome, a upstream.Attempt, endpoint string, streamed bool) {
	routed(info, a)
	info.TTFT, info.End, info.FinishReason = o.TTFT, o.End, o.FinishReason
	// What was generated is counted and priced on every ending: a
	// stream cut short was billed too.
	info.PromptTokens, info.CompletionTokens = o.Usage.PromptTokens, o.Usage.CompletionTokens
	info.CachedTokens, info.ReasoningTokens, info.CacheWriteTokens = o.Usage.CachedTokens, o.Usage.ReasoningTokens, o.Usage.CacheWriteTokens
	info.UsageEstimated, info.Cost, info.Priced = o.UsageEstimated, o.Cost, o.Priced
	info.Endpoint, info.Status = endpoint, http.StatusOK
	if o.End != outcome.Done {
		info.ErrorCode, info.Error = o.Err.Code, o.Cause
		if !streamed {
			info.Status = o.Err.Status
		}
	}
	call.e.Metrics.StreamEnded(endpoint, info, time.Since(info.Start))
	call.e.record(info)
	call.ticket.Settle(info.PromptTokens+info.CompletionTokens, info.Cost)
}

// routed records in info what routing did: the provider, deployment and
// kind that answered (or last failed), and the attempts it took.
func routed(info *middleware.Info, a upstream.Attempt) {
	info.Provider, info.Attempts, info.Fallbacks, info.Deployment, info.System = a.Provider, a.Attempts, a.Fallbacks, a.Deployment, a.System
}

// record writes the request's row in the ledger, if there is one.
func (e *Engine) record(info *middleware.Info) {
	if e.Ledger == nil {
		return
	}
	e.Ledger.Record(ledger.Entry{Time: info.Start, RequestID: info.RequestID, Key: info.KeyName, Model: info.Model,
		Provider: info.Provider, Deployment: info.Deployment, Endpoint: info.Endpoint, Status: info.Status,
		End: info.End.String(), ErrorCode: info.ErrorCode,
		PromptTokens: info.PromptTokens, CachedTokens: info.CachedTokens, CacheWriteTokens: info.CacheWriteTokens,
		CompletionTokens: info.CompletionTokens, ReasoningTokens: info.ReasoningTokens, UsageEstimated: info.UsageEstimated,
		Cost: info.Cost, Priced: info.Priced, TTFT: info.TTFT, Duration: time.Since(info.Start)})
}

// Stream relays the call to the client as SSE in format f: the upstream
// stream is opened first, and only then are a 200 and the SSE headers
// sent, so a failure before that is returned for a plain HTTP error with
// a real status. endpoint labels the metrics.
func (call *Call) Stream(f relay.Format, endpoint string) *failure.Error {
	call.endpoint = endpoint
	run, fe := call.open(call.c.Request.Context())
	if fe != nil {
		return fe
	}
	defer run.release()
	defer run.st.Close()
	g := call.e.Metrics.InFlight(endpoint)
	g.Inc()
	defer g.Dec()
	out := call.e.SSE(call.c.Writer)
	defer out.Stop()
	if h, ok := f.(relay.Heartbeater); ok {
		out.SetHeartbeat(h.Heartbeat())
	}
	p := &relay.Pump{Stream: run.st, Format: f, Request: call.req, Start: call.info.Start,
		Observer: call.e.Metrics.Stream(call.model, func() string { return run.st.Attempt().Provider }, nil)}
	_, span := tracing.Start(call.c.Request.Context(), tracing.SpanRelay, trace.SpanKindInternal)
	o := relay.Relay(run.ctx, out, p, run.st.Attempt().Provider, call.e.Redact)
	call.finish(call.info, o, run.st.Attempt(), endpoint, true)
	endRelay(span, call.info, false)
	return nil
}

// Complete reads the whole answer, for clients that asked for no
// streaming. The upstream is still streamed (one code path, cancellable
// at any point).
func (call *Call) Complete(endpoint string) (relay.Answer, relay.Result, *failure.Error) {
	call.endpoint = endpoint
	run, fe := call.open(call.c.Request.Context())
	if fe != nil {
		return relay.Answer{}, relay.Result{}, fe
	}
	defer run.release()
	defer run.st.Close()
	ans, res, err := relay.Collect(run.st, call.req)
	o := relay.Conclude(run.ctx, res, err, call.e.Redact)
	call.finish(call.info, &o, run.st.Attempt(), endpoint, false)
	if o.End != outcome.Done {
		return relay.Answer{}, o.Result, o.Err
	}
	call.e.traceAnswer(call.c.Request.Context(), &ans)
	return ans, o.Result, nil
}

// Generation is a resumable stream being set up: its id and where to
// follow it, for the dialect's format.
type Generation struct {
	ID        string
	EventsURL string
	TokenExp  int64
}

// Generate runs the call as a resumable stream: generated into a log by a
// producer under its own context (the last-reader policy decides when
// readers' absence cancels it), in the format newFormat returns for the
// stream. A detached stream (nobody reads it yet) runs on a goroutine of
// its own; otherwise the caller runs it as the primary reader
// (Producer.RunPrimary).
func (call *Call) Generate(newFormat func(Generation) resumable.Lines, detached bool, endpoint string) (*resumable.Producer, Generation, *failure.Error) {
	e := call.e
	g := Generation{ID: resumable.NewID()}
	g.EventsURL, g.TokenExp = e.Hub.EventsURL(g.ID, time.Now())
	f := newFormat(g)
	call.endpoint = endpoint
	// The stream's record in Redis is created while the upstream opens.
	reserved := e.Hub.Reserve(g.ID, call.meta())
	// The generation does not depend on this connection; its spans stay
	// in the request's trace.
	run, fe := call.open(tracing.Detach(call.c.Request.Context()))
	if fe != nil {
		e.Hub.Drop(reserved)
		return nil, g, fe
	}
	return call.start(g, f, run, reserved, detached, endpoint), g, nil
}

// meta is what the stream's log records of the call.
func (call *Call) meta() eventlog.Meta {
	return eventlog.Meta{Key: call.info.KeyName, Model: call.model}
}

// start hands the open stream to the hub. It is not part of Generate
// because the stream's description takes 2 KiB of frame, which
// Generate's would hold while it opens the upstream, the deepest point of
// a request's stack (see package offstack).
func (call *Call) start(g Generation, f resumable.Lines, run running, reserved *resumable.Reservation, detached bool, endpoint string) *resumable.Producer {
	e := call.e
	// The relay span lasts as long as the generation, which may outlive
	// the request's own span (a background response): it gets the
	// request's attributes too.
	_, span := tracing.Start(call.c.Request.Context(), tracing.SpanRelay, trace.SpanKindInternal)
	policy, grace := resumable.Policy(e.Config, call.model, call.info.KeyName)
	if call.outlive {
		policy = config.LastReaderDrain
	}
	inFlight := e.Metrics.InFlight(endpoint)
	inFlight.Inc()
	p := e.Hub.Start(resumable.Stream{
		ID: g.ID, EventsURL: g.EventsURL, TokenExp: g.TokenExp,
		Meta: call.meta(), Reserved: reserved,
		Pump:     relay.Pump{Stream: run.st, Format: f, Request: call.req, Start: call.info.Start},
		Provider: run.st.Attempt().Provider,
		Observe: func(unattended func() bool) relay.Observer {
			return e.Metrics.Stream(call.model, func() string { return run.st.Attempt().Provider }, unattended)
		},
		Ctx: run.ctx, Cancel: run.cancel, Release: run.release,
		Policy: policy, Grace: grace, Detached: detached, Info: *call.info, Redact: e.Redact,
		OnEnd: func(o relay.Outcome, info *middleware.Info) {
			inFlight.Dec()
			call.finish(info, &o, run.st.Attempt(), endpoint, true)
			endRelay(span, info, true)
		},
	})
	return p
}

// Embed computes embeddings of req.Input with model, for c: the model must
// be served to c's key, the request is admitted within c's limits
// (reserving its input's tokens), routed with fallback, and recorded
// under endpoint.
func (e *Engine) Embed(c *gin.Context, name string, req *providers.EmbedRequest, endpoint string) (*providers.Embeddings, *failure.Error) {
	model, info, fe := e.served(c, name)
	if fe != nil {
		return nil, fe
	}
	reserve := tokens.ApproxTexts(req.Input...)
	t, fe := e.Admitter.AdmitTokens(c.Request.Context(), c.Writer.Header(), client(c), model, reserve)
	if fe != nil {
		return nil, fe
	}
	ctx, _, release := e.upstreamContext(c.Request.Context())
	defer release()
	out, a, err := e.Registry.Embed(ctx, req, model, info.RequestID)
	routed(info, a)
	info.Endpoint = endpoint
	if err != nil {
		if a.Attempts == 0 {
			t.Unused()
		} else {
			var cost float64
			if a.Price != nil { // the upstream may have billed it
				cost = a.Price.Cost(&providers.Usage{PromptTokens: reserve})
			}
			t.Settle(reserve, cost)
		}
		fe := failure.Classify(ctx, err)
		fe.Message = e.Redact(fe.Message)
		info.Status, info.ErrorCode = fe.Status, fe.Code
		e.record(info)
		return nil, fe
	}
	info.End, info.PromptTokens, info.Status = outcome.Done, out.Usage.PromptTokens, http.StatusOK
	if a.Price != nil {
		info.Cost, info.Priced = a.Price.Cost(&out.Usage), true
	}
	e.Metrics.StreamEnded(endpoint, info, time.Since(info.Start))
	e.record(info)
	t.Settle(out.Usage.PromptTokens, info.Cost)
	return out, nil
}

// CountTokens counts the input tokens of req for model, for c: exactly,
// by the first of the model's providers that counts tokens (Anthropic's
// count_tokens), or else estimated with the gateway's tokenizer
// (estimated true). The model must be served to c's key; the request
// counts against c's request rate and reserves no tokens.
func (e *Engine) CountTokens(c *gin.Context, req *providers.Request, name string) (n int, estimated bool, fe *failure.Error) {
	model, info, fe := e.served(c, name)
	if fe != nil {
		return 0, false, fe
	}
	t, fe := e.Admitter.AdmitTokens(c.Request.Context(), c.Writer.Header(), client(c), model, 0)
	if fe != nil {
		return 0, false, fe
	}
	defer t.Settle(0, 0)
	ctx, _, release := e.upstreamContext(c.Request.Context())
	defer release()
	n, a, err := e.Registry.CountTokens(ctx, req, model)
	info.Provider, info.Attempts = a.Provider, a.Attempts
	info.End = outcome.Done
	switch {
	case err == nil:
		info.PromptTokens = n
		return n, false, nil
	case a.Attempts > 0 && !upstream.Retryable(err):
		// The upstream refused the request itself: so would the model.
		fe := failure.Classify(ctx, err)
		fe.Message = e.Redact(fe.Message)
		info.End, info.ErrorCode, info.Error = outcome.UpstreamError, fe.Code, fe.Message
		return 0, false, fe
	}
	n = tokens.Input(req.Messages, req.Tools)
	info.PromptTokens = n
	return n, true, nil
}

// override applies a model's drop and force settings to req, before
// admission (a forced max_tokens is what is reserved).
func override(req *providers.Request, m config.Model) {
	for _, p := range m.Drop {
		switch p {
		case "temperature":
			req.Temperature = nil
		case "top_p":
			req.TopP = nil
		case "max_tokens":
			req.MaxTokens = 0
		case "reasoning_effort":
			req.ReasoningEffort = ""
		case "seed":
			req.Seed = nil
		case "frequency_penalty":
			req.OpenAI.FrequencyPenalty = nil
		case "presence_penalty":
			req.OpenAI.PresencePenalty = nil
		case "stop":
			req.Stop = nil
		case "user":
			req.User = ""
		}
	}
	f := m.Force
	if f.Temperature != nil {
		req.Temperature = f.Temperature
	}
	if f.TopP != nil {
		req.TopP = f.TopP
	}
	if f.MaxTokens != nil {
		req.MaxTokens = *f.MaxTokens
	}
	if f.ReasoningEffort != "" {
		req.ReasoningEffort = f.ReasoningEffort
	}
	if f.Seed != nil {
		req.Seed = f.Seed
	}
	if f.FrequencyPenalty != nil {
		req.OpenAI.FrequencyPenalty = f.FrequencyPenalty
	}
	if f.PresencePenalty != nil {
		req.OpenAI.PresencePenalty = f.PresencePenalty
	}
	if len(f.Stop) > 0 {
		req.Stop = f.Stop
	}
	if f.User != "" {
		req.User = f.User
	}
}
