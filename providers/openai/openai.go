// Package openai is the provider for OpenAI and every server that speaks its
// chat completions API (Azure OpenAI, vLLM, Ollama, llama.cpp, Groq,
// OpenRouter, Together, DeepSeek, ...), built on go-openai.
package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	"github.com/streamgate/gateway/providers"
)

var _ providers.Provider = (*Provider)(nil)

// DefaultBaseURL is OpenAI's own API.
const DefaultBaseURL = "https://api.openai.com/v1"

// Options configures one OpenAI-compatible upstream.
type Options struct {
	// BaseURL is the API root, ending in /v1 for most servers
	// (default DefaultBaseURL).
	BaseURL string
	// APIKey is sent as a bearer token (as api-key for Azure). It may be
	// empty for local servers that need none.
	APIKey       string
	Organization string
	// Headers are added to every upstream request.
	Headers map[string]string
	// Azure, when set, speaks Azure OpenAI's dialect.
	Azure *AzureOptions
	// ConnectTimeout bounds dialling and the TLS handshake (default 10s).
	ConnectTimeout time.Duration
	// MaxEmptyLines is how many non-data lines in a row (comments,
	// keep-alives) the stream reader tolerates before giving up. Reasoning
	// models behind some servers send hundreds while they think
	// (default 100000).
	MaxEmptyLines uint
	// Transport, when set, replaces the default HTTP transport (tests).
	Transport http.RoundTripper
}

// AzureOptions are the settings specific to Azure OpenAI.
type AzureOptions struct {
	// APIVersion is the api-version query parameter (e.g. 2024-10-21).
	APIVersion string
	// Deployments maps upstream model names to deployment names; a model
	// without an entry is used as the deployment name.
	Deployments map[string]string
}

// Provider talks to one OpenAI-compatible upstream.
type Provider struct {
	client      *goopenai.Client
	unavailable error
}

// New builds a provider. A provider for OpenAI's own API (or Azure) without
// an API key is created but refuses calls with ErrUnavailable, so that a
// config file can list it before the key is set.
func New(opts Options) (*Provider, error) {
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultBaseURL
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.MaxEmptyLines == 0 {
		opts.MaxEmptyLines = 100000
	}
	var cfg goopenai.ClientConfig
	if opts.Azure != nil {
		cfg = goopenai.DefaultAzureConfig(opts.APIKey, opts.BaseURL)
		if opts.Azure.APIVersion != "" {
			cfg.APIVersion = opts.Azure.APIVersion
		}
		deployments := opts.Azure.Deployments
		cfg.AzureModelMapperFunc = func(model string) string {
			if d, ok := deployments[model]; ok {
				return d
			}
			return model
		}
	} else {
		cfg = goopenai.DefaultConfig(opts.APIKey)
		cfg.BaseURL = strings.TrimRight(opts.BaseURL, "/")
		cfg.OrgID = opts.Organization
	}
	cfg.EmptyMessagesLimit = opts.MaxEmptyLines
	transport := opts.Transport
	if transport == nil {
		transport = newTransport(opts.ConnectTimeout)
	}
	// No http.Client.Timeout: it would bound reading the whole stream.
	cfg.HTTPClient = &doer{client: &http.Client{Transport: transport}, headers: opts.Headers}

	p := &Provider{client: goopenai.NewClientWithConfig(cfg)}
	if opts.APIKey == "" && (opts.Azure != nil || strings.HasPrefix(opts.BaseURL, "https://api.openai.com")) {
		p.unavailable = fmt.Errorf("%w: its api_key is empty (set the environment variable config.yaml names, e.g. OPENAI_API_KEY, and restart)", providers.ErrUnavailable)
	}
	return p, nil
}

// Unavailable says why the provider refuses calls, or nil when it serves.
func (p *Provider) Unavailable() error { return p.unavailable }

func newTransport(connect time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = connect
	// Many concurrent streams go to the same host: keep their connections.
	t.MaxIdleConnsPerHost = 256
	// A compressed event stream can be held back by the upstream's
	// compressor; ask for identity.
	t.DisableCompression = true
	return t
}

// doer adds the configured headers and remembers what an upstream said in
// Retry-After when it refused a call.
type doer struct {
	client  *http.Client
	headers map[string]string
}

type callKey struct{}

// call is per-request state the doer fills in.
type call struct {
	retryAfter time.Duration
}

func (d *doer) Do(req *http.Request) (*http.Response, error) {
	for k, v := range d.headers {
		req.Header.Set(k, v)
	}
	resp, err := d.client.Do(req)
	if err == nil && resp.StatusCode >= 400 {
		if c, ok := req.Context().Value(callKey{}).(*call); ok {
			c.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
		}
	}
	return resp, err
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// StreamChat opens a chat completion stream. The upstream is always asked
// for usage (stream_options.include_usage): limits and metrics need it.
func (p *Provider) StreamChat(ctx context.Context, req *providers.Request) (providers.Stream, error) {
	if p.unavailable != nil {
		return nil, &providers.Error{Status: http.StatusServiceUnavailable, Code: "provider_not_configured", Message: p.unavailable.Error(), Err: p.unavailable}
	}
	creq, err := toUpstream(req)
	if err != nil {
		return nil, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: err.Error(), Err: err}
	}
	c := &call{}
	st, err := p.client.CreateChatCompletionStream(context.WithValue(ctx, callKey{}, c), creq)
	if err != nil {
		// go-openai's Close panics on the stream it returns with an
		// error: there is nothing to close here.
		return nil, classify(err, c.retryAfter)
	}
	return &stream{st: st}, nil
}

func toUpstream(req *providers.Request) (goopenai.ChatCompletionRequest, error) {
	out := goopenai.ChatCompletionRequest{
		Model:         req.Model,
		Messages:      make([]goopenai.ChatCompletionMessage, len(req.Messages)),
		MaxTokens:     req.MaxTokens,
		Stop:          req.Stop,
		User:          req.User,
		Seed:          req.Seed,
		StreamOptions: &goopenai.StreamOptions{IncludeUsage: true},
	}
	if req.Temperature != nil {
		out.Temperature = *req.Temperature
		if out.Temperature == 0 {
			// go-openai omits a zero temperature, and upstreams then
			// use their default of 1.
			out.Temperature = math.SmallestNonzeroFloat32
		}
	}
	if req.TopP != nil {
		out.TopP = *req.TopP
	}
	for i, m := range req.Messages {
		cm := goopenai.ChatCompletionMessage{Role: m.Role, Content: m.Content, Name: m.Name, ToolCallID: m.ToolCallID}
		for _, part := range m.Parts {
			p := goopenai.ChatMessagePart{Type: goopenai.ChatMessagePartType(part.Type), Text: part.Text}
			if part.ImageURL != nil {
				p.ImageURL = &goopenai.ChatMessageImageURL{URL: part.ImageURL.URL, Detail: goopenai.ImageURLDetail(part.ImageURL.Detail)}
			}
			cm.MultiContent = append(cm.MultiContent, p)
		}
		for _, tc := range m.ToolCalls {
			cm.ToolCalls = append(cm.ToolCalls, goopenai.ToolCall{
				ID: tc.ID, Type: goopenai.ToolType(tc.Type),
				Function: goopenai.FunctionCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments},
			})
		}
		out.Messages[i] = cm
	}
	for _, t := range req.Tools {
		fd := &goopenai.FunctionDefinition{Name: t.Function.Name, Description: t.Function.Description, Strict: t.Function.Strict}
		if len(t.Function.Parameters) > 0 {
			fd.Parameters = t.Function.Parameters
		}
		out.Tools = append(out.Tools, goopenai.Tool{Type: goopenai.ToolType(t.Type), Function: fd})
	}
	if len(req.ToolChoice) > 0 {
		out.ToolChoice = req.ToolChoice
	}
	if len(req.ResponseFormat) > 0 {
		var rf goopenai.ChatCompletionResponseFormat
		if err := json.Unmarshal(req.ResponseFormat, &rf); err != nil {
			return out, fmt.Errorf("response_format: %w", err)
		}
		out.ResponseFormat = &rf
	}
	// Reasoning models take max_completion_tokens and refuse max_tokens.
	if errors.Is(goopenai.NewReasoningValidator().Validate(out), goopenai.ErrReasoningModelMaxTokensDeprecated) {
		out.MaxCompletionTokens, out.MaxTokens = out.MaxTokens, 0
	}
	return out, nil
}

type stream struct {
	st       *goopenai.ChatCompletionStream
	finished bool // a finish reason was seen
	once     sync.Once
}

// Recv returns the next chunk with content, tool calls, a finish reason or
// usage; content-free chunks (the role chunk, empty deltas) are skipped.
func (s *stream) Recv() (providers.Chunk, error) {
	for {
		resp, err := s.st.Recv()
		if errors.Is(err, io.EOF) {
			if !s.finished {
				return providers.Chunk{}, providers.ErrTruncated
			}
			return providers.Chunk{}, io.EOF
		}
		if err != nil {
			return providers.Chunk{}, classify(err, 0)
		}
		var c providers.Chunk
		if len(resp.Choices) > 0 {
			ch := &resp.Choices[0]
			c.Content = ch.Delta.Content
			c.FinishReason = string(ch.FinishReason)
			for _, tc := range ch.Delta.ToolCalls {
				d := providers.ToolCallDelta{ID: tc.ID, Type: string(tc.Type), Name: tc.Function.Name, Arguments: tc.Function.Arguments}
				if tc.Index != nil {
					d.Index = *tc.Index
				}
				c.ToolCalls = append(c.ToolCalls, d)
			}
		}
		if c.FinishReason != "" {
			s.finished = true
		}
		if u := resp.Usage; u != nil {
			c.Usage = &providers.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
		}
		if c.Content == "" && c.FinishReason == "" && c.Usage == nil && len(c.ToolCalls) == 0 {
			continue
		}
		return c, nil
	}
}

func (s *stream) Close() error {
	var err error
	s.once.Do(func() { err = s.st.Close() })
	return err
}

// classify turns go-openai's errors into providers.Error where the upstream
// said something; context and network errors pass through unchanged so the
// gateway can tell a client that left from an upstream that timed out.
func classify(err error, retryAfter time.Duration) error {
	var apiErr *goopenai.APIError
	if errors.As(err, &apiErr) {
		code := ""
		switch c := apiErr.Code.(type) {
		case string:
			code = c
		case float64:
			code = strconv.Itoa(int(c))
		}
		if code == "" {
			code = apiErr.Type
		}
		return &providers.Error{Status: apiErr.HTTPStatusCode, Code: code, Message: apiErr.Message, RetryAfter: retryAfter, Err: err}
	}
	var reqErr *goopenai.RequestError
	if errors.As(err, &reqErr) {
		// The body may be an HTML error page: report the status only.
		return &providers.Error{
			Status:     reqErr.HTTPStatusCode,
			Message:    fmt.Sprintf("upstream answered %d %s", reqErr.HTTPStatusCode, http.StatusText(reqErr.HTTPStatusCode)),
			RetryAfter: retryAfter,
			Err:        err,
		}
	}
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &syntaxErr) || errors.As(err, &typeErr) {
		return fmt.Errorf("%w: %w", providers.ErrMalformed, err)
	}
	if errors.Is(err, goopenai.ErrTooManyEmptyStreamMessages) {
		return &providers.Error{Code: "too_many_empty_messages", Message: "upstream sent too many empty lines", Err: err}
	}
	return err
}
