package anthropic

import (
	"context"
	"errors"
	"fmt"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/tidwall/sjson"

	"github.com/streamgate/gateway/providers"
)

var (
	_ providers.NativeSpeaker = (*Provider)(nil)
	_ providers.TokenCounter  = (*Provider)(nil)
)

// SpeaksNative reports that the provider takes Messages API requests as
// the client sent them.
func (p *Provider) SpeaksNative(api string) bool { return api == providers.APIAnthropicMessages }

// streamNative sends a Native Messages request: the client's body, with
// the routed model and the fields the engine decides written over it.
func (p *Provider) streamNative(ctx context.Context, req *providers.Request) (providers.Stream, error) {
	body, err := nativeBody(req, p.maxTokens)
	if err != nil {
		return nil, err
	}
	st := p.client.Messages.NewStreaming(ctx, sdk.MessageNewParams{}, p.nativeOptions(req, body)...)
	if err := st.Err(); err != nil {
		st.Close()
		return nil, classify(err)
	}
	return &stream{st: st, tools: map[int64]int{}, jsonIndex: -1, native: true}, nil
}

// CountTokens counts a Native request's input tokens with Anthropic's
// count_tokens endpoint. Other requests are not counted here
// (errors.ErrUnsupported): the caller estimates them.
func (p *Provider) CountTokens(ctx context.Context, req *providers.Request) (int, error) {
	if p.unavailable != nil {
		return 0, p.unavailable
	}
	n := req.Native
	if n == nil || n.API != providers.APIAnthropicMessages {
		return 0, errors.ErrUnsupported
	}
	body, err := sjson.SetBytes(n.Body, "model", req.Model)
	if err != nil {
		return 0, fmt.Errorf("set model: %w", err)
	}
	res, err := p.client.Messages.CountTokens(ctx, sdk.MessageCountTokensParams{}, p.nativeOptions(req, body)...)
	if err != nil {
		return 0, classify(err)
	}
	return int(res.InputTokens), nil
}

// nativeOptions sends body as it is, with the client's API headers
// (anthropic-beta) besides the provider's own.
func (p *Provider) nativeOptions(req *providers.Request, body []byte) []option.RequestOption {
	opts := []option.RequestOption{option.WithRequestBody("application/json", body)}
	for k, v := range req.Native.Header {
		opts = append(opts, option.WithHeader(k, v))
	}
	return opts
}

// nativeBody is the body of a Native request as it goes upstream: the
// model routed to, and the fields that the engine may have overridden.
func nativeBody(req *providers.Request, defaultMax int) ([]byte, error) {
	e := providers.EditBody(req.Native.Body)
	e.Set("model", req.Model)
	maxTokens := req.MaxTokens
	if maxTokens <= 0 {
		maxTokens = defaultMax
	}
	e.Set("max_tokens", maxTokens)
	e.Float("temperature", req.Temperature)
	e.Float("top_p", req.TopP)
	if len(req.Stop) == 0 {
		e.Delete("stop_sequences")
	} else {
		e.Set("stop_sequences", req.Stop)
	}
	e.String("metadata.user_id", req.User)
	return e.Bytes()
}
