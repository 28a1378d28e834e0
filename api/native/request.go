package native

import (
	"github.com/streamgate/gateway/api"
	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/providers"
)

// streamRequest is the body of POST /v1/stream.
type streamRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	// Prompt is shorthand for one user message.
	Prompt string `json:"prompt"`
	// System is prepended as a system message.
	System string `json:"system"`
	api.Sampling
	// NamedEvents asks for "event: <type>" lines (also ?named_events=true).
	NamedEvents bool `json:"named_events"`
}

// ModelName is the model asked for.
func (sr *streamRequest) ModelName() string { return sr.Model }

// ToProvider converts the body to the engine's request.
func (sr *streamRequest) ToProvider() (*providers.Request, *failure.Error) {
	if sr.Model == "" {
		return nil, failure.BadParam("missing_model", "model", "model is required")
	}
	if sr.Prompt != "" && len(sr.Messages) > 0 {
		return nil, failure.BadParam("invalid_request", "prompt", "give either prompt or messages, not both")
	}
	req := &providers.Request{}
	if sr.System != "" {
		req.Messages = append(req.Messages, providers.Message{Role: "system", Content: sr.System})
	}
	if sr.Prompt != "" {
		req.Messages = append(req.Messages, providers.Message{Role: "user", Content: sr.Prompt})
	}
	for _, m := range sr.Messages {
		req.Messages = append(req.Messages, providers.Message{Role: m.Role, Content: m.Content})
	}
	if len(sr.Messages) == 0 && sr.Prompt == "" {
		return nil, failure.BadParam("missing_messages", "messages", "messages (or prompt) is required")
	}
	if e := api.CheckMessages(req.Messages); e != nil {
		return nil, e
	}
	if e := sr.Sampling.Apply(req); e != nil {
		return nil, e
	}
	return req, nil
}
