package gateway

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
)

// handleStream serves POST /v1/stream, the gateway's native event stream.
// The generation runs on a producer that writes the stream's log; this
// connection is its primary reader, written by the producer itself on this
// goroutine, and others may resume the stream from the log.
func (s *Server) handleStream(c *gin.Context) {
	start := time.Now()
	var body streamRequest
	req, routes, adm, ok := s.accept(c, &body, true)
	if !ok {
		return
	}
	named := body.NamedEvents
	if v, err := strconv.ParseBool(c.Query("named_events")); err == nil {
		named = v
	}
	p, ok := s.startStream(c, routes, req, adm, body.Model, start, false)
	if !ok {
		return
	}
	out := startSSE(c.Writer, s.cfg.Server.HeartbeatInterval.Std(), s.cfg.Server.WriteTimeout.Std())
	defer out.stop()
	stayed := p.runPrimary(c.Request.Context(), out, named)
	info := middleware.Get(c)
	p.report(info)
	if !stayed {
		info.End, info.ErrorCode, info.Error = "client_gone", errClientClosed.Code, "the client left; the stream ended "+p.info.End
	}
}

// handleChat serves POST /v1/chat/completions in OpenAI's format.
func (s *Server) handleChat(c *gin.Context) {
	var body chatRequest
	req, routes, adm, ok := s.accept(c, &body, false)
	if !ok {
		return
	}
	if !body.Stream {
		s.complete(c, routes, req, adm, body.Model)
		return
	}
	includeUsage := body.StreamOptions != nil && body.StreamOptions.IncludeUsage
	f := newChatFormat(middleware.Get(c).RequestID, body.Model, time.Now().Unix(), includeUsage)
	s.stream(c, routes, req, adm, f)
}

// clientRequest is a request body of one of the endpoints.
type clientRequest interface {
	toProvider() (*providers.Request, *apiError)
	model() string
}

// accept decodes and validates a request body into body, resolves its
// model and admits it within the caller's limits. When it reports false it
// has already answered with the error; otherwise the caller must settle
// the admission.
func (s *Server) accept(c *gin.Context, body clientRequest, strict bool) (*providers.Request, []deployment, *admission, bool) {
	if e := decodeJSON(c.Request, body, strict); e != nil {
		s.fail(c, e)
		return nil, nil, nil, false
	}
	req, e := body.toProvider()
	if e != nil {
		s.fail(c, e)
		return nil, nil, nil, false
	}
	name := body.model()
	routes := order(s.reg.models[name], s.reg.strategies[name], time.Now())
	if len(routes) == 0 {
		s.fail(c, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "model_not_found",
			Message: "model " + strconv.Quote(name) + " does not exist; GET /v1/models lists the models served"})
		return nil, nil, nil, false
	}
	info := middleware.Get(c)
	info.Model, info.Provider = name, routes[0].providerName
	adm, ok := s.admit(c, req, name)
	return req, routes, adm, ok
}

// upstreamCall is an upstream call's context: cancel ends it with a cause,
// done releases it when the stream is over.
type upstreamCall struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   func()
}

// open starts the upstream call under parent, cut short also by the
// server's shutdown, trying the model's routes as the retry settings
// allow, and records the attempts in info. While it opens, the client
// waits: its leaving cancels the call whatever parent is. On failure the
// call is released and the error is ready for the client.
func (s *Server) open(c *gin.Context, parent context.Context, routes []deployment, req *providers.Request, info *middleware.Info) (upstreamCall, *resilientStream, *apiError) {
	ctx, cancel := context.WithCancelCause(parent)
	stop := context.AfterFunc(s.stopping, func() { cancel(context.Cause(s.stopping)) })
	call := upstreamCall{ctx: ctx, cancel: cancel, done: func() { stop(); cancel(context.Canceled) }}
	if rctx := c.Request.Context(); parent != rctx {
		defer context.AfterFunc(rctx, func() { cancel(context.Canceled) })()
	}
	st, err := s.openResilient(ctx, req, routes, info)
	if err != nil {
		e := s.clientError(ctx, err)
		call.done()
		return call, nil, e
	}
	return call, st, nil
}

// stream opens the upstream stream first and only then commits to a 200 and
// SSE: a failure before that is a plain HTTP error with a real status.
func (s *Server) stream(c *gin.Context, routes []deployment, req *providers.Request, adm *admission, f streamFormat) {
	start := time.Now()
	ctx, st, end, ok := s.begin(c, routes, req, adm)
	if !ok {
		return
	}
	defer end()
	g := s.metrics.inFlight.WithLabelValues(endpointChat)
	g.Inc()
	defer g.Dec()
	info := middleware.Get(c)
	s.relay(ctx, c.Writer, st, f, req, info, start)
	s.metrics.streamEnded(endpointChat, info, time.Since(start))
}

// begin opens the upstream stream of an admitted request. When it fails
// it answers the client and settles the admission itself; otherwise the
// caller must call end when done, which closes the stream, cancels its
// context and settles the admission with the outcome recorded in Info.
func (s *Server) begin(c *gin.Context, routes []deployment, req *providers.Request, adm *admission) (context.Context, *resilientStream, func(), bool) {
	info := middleware.Get(c)
	call, st, e := s.open(c, c.Request.Context(), routes, req, info)
	if e != nil {
		adm.settle(info, false)
		s.fail(c, e)
		return nil, nil, nil, false
	}
	return call.ctx, st, func() {
		st.Close()
		call.done()
		adm.settle(info, true)
	}, true
}

// complete serves stream=false: the upstream is still streamed (one code
// path, cancellable at any point), and the answer is sent whole.
func (s *Server) complete(c *gin.Context, routes []deployment, req *providers.Request, adm *admission, model string) {
	start := time.Now()
	ctx, st, end, ok := s.begin(c, routes, req, adm)
	if !ok {
		return
	}
	defer end()
	info := middleware.Get(c)
	defer func() { s.metrics.streamEnded(endpointChat, info, time.Since(start)) }()
	content, calls, res, deltas, rerr := collect(st)
	if rerr != nil {
		e := s.clientError(ctx, rerr)
		s.fail(c, e)
		if info.End == "" {
			info.End = "upstream_error"
			if e.Code == "server_shutdown" {
				info.End = "shutdown"
			}
		}
		return
	}
	info.End = "done"
	if res.usageEstimated {
		res.usage = countUsage(req, []byte(content), deltas)
	}
	info.PromptTokens, info.CompletionTokens = res.usage.PromptTokens, res.usage.CompletionTokens
	msg := gin.H{"role": "assistant", "content": content, "refusal": nil}
	if len(calls) > 0 {
		msg["tool_calls"] = calls
		if content == "" {
			msg["content"] = nil
		}
	}
	c.JSON(http.StatusOK, gin.H{
		"id":                 "chatcmpl-" + info.RequestID,
		"object":             "chat.completion",
		"created":            time.Now().Unix(),
		"model":              model,
		"system_fingerprint": nil,
		"choices": []gin.H{{
			"index": 0, "message": msg, "logprobs": nil, "finish_reason": res.finishReason,
		}},
		"usage": res.usage,
	})
}

func (s *Server) handleModels(c *gin.Context) {
	allowed := s.lim.defaults.models
	if name := middleware.Get(c).KeyName; name != "" {
		allowed = s.lim.keys[name].models
	}
	data := make([]gin.H, 0, len(s.reg.names))
	for _, name := range s.reg.names {
		if allowed != nil && !allowed[name] {
			continue
		}
		data = append(data, gin.H{"id": name, "object": "model", "created": s.started.Unix(), "owned_by": s.reg.models[name][0].providerName})
	}
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": data})
}

// clientError classifies err and makes its message safe to show.
func (s *Server) clientError(ctx context.Context, err error) *apiError {
	e := classify(ctx, err)
	if m := s.redact.Replace(e.Message); m != e.Message {
		cp := *e
		cp.Message = m
		e = &cp
	}
	return e
}

// fail answers with e before anything was written, and records it for the
// access log.
func (s *Server) fail(c *gin.Context, e *apiError) {
	info := middleware.Get(c)
	info.ErrorCode, info.Error = e.Code, e.Message
	if e.Status == StatusClientClosedRequest {
		info.End = "client_gone"
	}
	writeError(c, e)
}

// handleDeployments serves GET /admin/deployments: every model's routes in
// configured order, with the state routing decides by.
func (s *Server) handleDeployments(c *gin.Context) {
	now := time.Now()
	models := make([]gin.H, 0, len(s.reg.names))
	for _, name := range s.reg.names {
		strategy := s.reg.strategies[name]
		if strategy == "" {
			strategy = strategyFallback
		}
		routes := make([]gin.H, 0, len(s.reg.models[name]))
		for _, d := range s.reg.models[name] {
			ttft, failures, until, halfOpen := d.health.snapshot()
			state := "healthy"
			switch {
			case now.Before(until):
				state = "cooldown"
			case halfOpen || (!until.IsZero() && !now.Before(until)):
				state = "probing"
			}
			r := gin.H{"provider": d.providerName, "model": d.model, "weight": d.weight, "state": state,
				"in_flight": d.health.inflight.Load(), "consecutive_failures": failures, "ttft_ms": float64(ttft.Microseconds()) / 1000}
			if state == "cooldown" {
				r["cooldown_until"] = until.UTC().Format(time.RFC3339Nano)
			}
			routes = append(routes, r)
		}
		models = append(models, gin.H{"model": name, "strategy": strategy, "routes": routes})
	}
	c.JSON(http.StatusOK, gin.H{"models": models})
}
