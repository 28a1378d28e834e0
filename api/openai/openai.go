// Package openai is OpenAI's Chat Completions dialect: POST
// /v1/chat/completions (streaming as chat.completion.chunk events ending
// in [DONE], or one chat.completion), POST /v1/embeddings and GET
// /v1/models, with OpenAI's error envelope.
package openai

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/engine"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
)

// endpoint labels this dialect's streams in metrics.
const endpoint = "chat"

// Dialect serves OpenAI's API on an engine.
type Dialect struct{ e *engine.Engine }

// New returns the dialect on e.
func New(e *engine.Engine) *Dialect { return &Dialect{e: e} }

var _ api.Dialect = (*Dialect)(nil)

// Register adds POST /chat/completions, POST /embeddings, GET /models and
// GET /models/{id}.
func (d *Dialect) Register(authed, _ gin.IRouter) {
	authed.POST("/chat/completions", d.chat)
	authed.GET("/models", d.models)
	authed.GET("/models/:id", d.getModel)
	authed.POST("/embeddings", d.embeddings)
	authed.POST("/completions", d.completions)
}

// WriteError answers with OpenAI's {"error":{...}}.
func (d *Dialect) WriteError(c *gin.Context, e *failure.Error) { api.WriteError(c, e) }

// chat serves POST /v1/chat/completions.
func (d *Dialect) chat(c *gin.Context) {
	var body chatRequest
	call, ok := api.Accept(c, d.e, &body, false, d.WriteError)
	if !ok {
		return
	}
	if !body.Stream {
		d.complete(c, call, body.Model)
		return
	}
	includeUsage := body.StreamOptions != nil && body.StreamOptions.IncludeUsage
	f := newFormat(middleware.Get(c).RequestID, body.Model, time.Now().Unix(), includeUsage)
	if e := call.Stream(f, endpoint); e != nil {
		d.WriteError(c, e)
	}
}

// complete answers stream=false with one chat.completion.
func (d *Dialect) complete(c *gin.Context, call *engine.Call, model string) {
	ans, res, e := call.Complete(endpoint)
	if e != nil {
		d.WriteError(c, e)
		return
	}
	msg := gin.H{"role": "assistant", "content": ans.Content, "refusal": nil}
	if ans.Reasoning != "" {
		msg["reasoning_content"] = ans.Reasoning
	}
	if ans.ReasoningSignature != "" {
		msg["reasoning_signature"] = ans.ReasoningSignature
	}
	if len(ans.RedactedReasoning) > 0 {
		msg["reasoning_redacted"] = ans.RedactedReasoning
	}
	if len(ans.ToolCalls) > 0 {
		msg["tool_calls"] = ans.ToolCalls
		if ans.Content == "" {
			msg["content"] = nil
		}
	}
	c.JSON(http.StatusOK, gin.H{
		"id":                 "chatcmpl-" + middleware.Get(c).RequestID,
		"object":             "chat.completion",
		"created":            time.Now().Unix(),
		"model":              model,
		"system_fingerprint": nil,
		"choices": []gin.H{{
			"index": 0, "message": msg, "logprobs": nil, "finish_reason": res.FinishReason,
		}},
		"usage": json.RawMessage(api.AppendUsage(nil, &res.Usage)),
	})
}

// models serves GET /v1/models: the models the caller's key may use,
// those that can answer now first.
func (d *Dialect) models(c *gin.Context) {
	models := d.e.Models(c)
	data := make([]gin.H, 0, len(models))
	for _, m := range models {
		data = append(data, d.model(m))
	}
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": data})
}

// getModel serves GET /v1/models/{id}.
func (d *Dialect) getModel(c *gin.Context) {
	m, e := d.e.Model(c, c.Param("id"))
	if e != nil {
		d.WriteError(c, e)
		return
	}
	c.JSON(http.StatusOK, d.model(m))
}

// model is OpenAI's model object, with "available" (and why not) added:
// SDKs ignore fields they do not know.
func (d *Dialect) model(m engine.Model) gin.H {
	o := gin.H{"id": m.Name, "object": "model", "created": d.e.Started.Unix(), "owned_by": m.Owner, "available": m.Unavailable == ""}
	if m.Unavailable != "" {
		o["unavailable_reason"] = m.Unavailable
	}
	return o
}
