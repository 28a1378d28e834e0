package anthropic

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

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
// model routed to, and the fields that the engine may have overridden
// (a model's drop and force settings) written from req. Each was decoded
// from this body, so a field nothing overrode is written back unchanged.
func nativeBody(req *providers.Request, defaultMax int) ([]byte, error) {
	b := req.Native.Body
	var err error
	set := func(path string, v any) {
		if err == nil {
			b, err = sjson.SetBytes(b, path, v)
		}
	}
	setRaw := func(path string, raw string) {
		if err == nil {
			b, err = sjson.SetRawBytes(b, path, []byte(raw))
		}
	}
	del := func(path string) {
		if err == nil {
			b, err = sjson.DeleteBytes(b, path)
		}
	}
	// sjson writes into the slice it is given when it has room: work
	// on a copy, so the request can be sent again on a retry.
	b = append(make([]byte, 0, len(b)+64), b...)
	set("model", req.Model)
	maxTokens := req.MaxTokens
	if maxTokens <= 0 {
		maxTokens = defaultMax
	}
	set("max_tokens", maxTokens)
	// A float32 printed at its own precision reads back as the number
	// the client wrote (0.7, not 0.699999988).
	for _, f := range []struct {
		path string
		v    *float32
	}{{"temperature", req.Temperature}, {"top_p", req.TopP}} {
		if f.v == nil {
			del(f.path)
			continue
		}
		setRaw(f.path, strconv.FormatFloat(float64(*f.v), 'g', -1, 32))
	}
	if len(req.Stop) == 0 {
		del("stop_sequences")
	} else {
		set("stop_sequences", req.Stop)
	}
	if req.User == "" {
		del("metadata.user_id")
	} else {
		set("metadata.user_id", req.User)
	}
	if err != nil {
		return nil, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: "request body: " + err.Error(), Err: err}
	}
	return b, nil
}
