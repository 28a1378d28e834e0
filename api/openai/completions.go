package openai

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/jsonstr"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/relay"
)

// completionRequest is the body of POST /v1/completions, OpenAI's legacy
// text completion: a raw prompt, completed without a chat template.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Suffix        string          `json:"suffix"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N      *int `json:"n"`
	BestOf *int `json:"best_of"`
	Echo   bool `json:"echo"`
	// LogProbs is the legacy API's integer form.
	LogProbs *int `json:"logprobs"`
	Seed     *int `json:"seed"`
	api.Sampling
	FrequencyPenalty *float32          `json:"frequency_penalty"`
	PresencePenalty  *float32          `json:"presence_penalty"`
	LogitBias        map[string]int    `json:"logit_bias"`
	Metadata         map[string]string `json:"metadata"`
}

// ModelName is the model asked for.
func (cr *completionRequest) ModelName() string { return cr.Model }

// ToProvider converts the body to the engine's request.
func (cr *completionRequest) ToProvider() (*providers.Request, *failure.Error) {
	if cr.Model == "" {
		return nil, failure.BadParam("missing_model", "model", "model is required")
	}
	var prompt string
	if err := json.Unmarshal(cr.Prompt, &prompt); err != nil {
		var many []string
		if json.Unmarshal(cr.Prompt, &many) != nil || len(many) != 1 {
			return nil, failure.BadParam("invalid_type", "prompt", "prompt must be a string (or an array of one string): the gateway streams one completion")
		}
		prompt = many[0]
	}
	if prompt == "" {
		return nil, failure.BadParam("missing_prompt", "prompt", "prompt is required")
	}
	switch {
	case cr.N != nil && *cr.N != 1:
		return nil, failure.BadParam("unsupported_value", "n", "n must be 1: the gateway streams one choice")
	case cr.BestOf != nil && *cr.BestOf != 1:
		return nil, failure.BadParam("unsupported_value", "best_of", "best_of must be 1: the gateway streams one choice")
	case cr.Echo:
		return nil, failure.BadParam("unsupported_parameter", "echo", "echo is not supported by the gateway")
	case cr.LogProbs != nil:
		return nil, failure.BadParam("unsupported_parameter", "logprobs", "logprobs is not supported on legacy completions by the gateway")
	}
	req := &providers.Request{Prompt: prompt, Suffix: cr.Suffix, Seed: cr.Seed,
		OpenAI: providers.OpenAIParams{FrequencyPenalty: cr.FrequencyPenalty, PresencePenalty: cr.PresencePenalty, LogitBias: cr.LogitBias, Metadata: cr.Metadata}}
	if e := cr.Sampling.Apply(req); e != nil {
		return nil, e
	}
	if req.ReasoningEffort != "" {
		return nil, failure.BadParam("unsupported_parameter", "reasoning_effort", "reasoning_effort is not a parameter of legacy completions")
	}
	return req, nil
}

// completions serves POST /v1/completions.
func (d *Dialect) completions(c *gin.Context) {
	var body completionRequest
	call, ok := api.Accept(c, d.e, &body, true, d.WriteError)
	if !ok {
		return
	}
	id, created := "cmpl-"+middleware.Get(c).RequestID, time.Now().Unix()
	if !body.Stream {
		ans, res, e := call.Complete(endpointCompletions)
		if e != nil {
			d.WriteError(c, e)
			return
		}
		c.JSON(http.StatusOK, gin.H{"id": id, "object": "text_completion", "created": created, "model": body.Model,
			"choices": []gin.H{{"text": ans.Content, "index": 0, "logprobs": nil, "finish_reason": res.FinishReason}},
			"usage":   json.RawMessage(api.AppendUsage(nil, &res.Usage))})
		return
	}
	f := newTextFormat(id, body.Model, created, body.StreamOptions != nil && body.StreamOptions.IncludeUsage)
	if e := call.Stream(f, endpointCompletions); e != nil {
		d.WriteError(c, e)
	}
}

// endpointCompletions labels legacy completions in metrics.
const endpointCompletions = "completions"

// textFormat is the legacy text_completion stream: chunks with
// choices[0].text, then [DONE]; errors as in chat completions.
type textFormat struct{ streamBase }

func newTextFormat(id, model string, created int64, includeUsage bool) *textFormat {
	return &textFormat{streamBase{prefix: chunkPrefix(id, "text_completion", model, created, false), includeUsage: includeUsage}}
}

func (f *textFormat) Opened(buf []byte, _ string) []byte { return buf }

func (f *textFormat) Chunk(buf []byte, c *providers.Chunk) []byte {
	if c.Content == "" && c.FinishReason == "" {
		return buf
	}
	buf = append(buf, f.prefix...)
	buf = append(buf, `{"text":`...)
	buf = jsonstr.Append(buf, c.Content)
	buf = append(buf, `,"index":0`...)
	return appendFinish(buf, c.FinishReason)
}

var _ relay.Format = (*textFormat)(nil)
