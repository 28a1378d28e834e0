// Package openai is the provider for OpenAI and every server that speaks its
// chat completions API (Azure OpenAI, vLLM, Ollama, llama.cpp, Groq,
// OpenRouter, Together, DeepSeek, ...), built on go-openai.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
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
	// MaxLineBytes caps one line of the upstream's event stream
	// (default 8 MiB).
	MaxLineBytes int
	// Responses says the upstream serves OpenAI's Responses API
	// (POST /responses): requests made in that API go to it as they
	// are instead of being translated into chat completions.
	Responses bool
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
	http        *http.Client
	unavailable error
	maxLine     int
	// direct says where, and as whom, the requests go that the
	// provider sends itself rather than through go-openai: legacy
	// completions (go-openai refuses by name models it takes for chat
	// models on /completions, which is the upstream's to decide) and
	// the Responses API (which go-openai does not speak).
	direct *target
	// azure: Azure deployments serve no legacy completions.
	azure bool
	// responses: the upstream serves the Responses API.
	responses bool
}

// target is an upstream API root and its credentials.
type target struct {
	// root is the URL the API's paths go under (.../v1).
	root    string
	apiKey  string
	org     string
	headers map[string]string
	// azure sends the key as api-key and maps models to deployments.
	azure       bool
	deployments map[string]string
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
	if opts.MaxLineBytes <= 0 {
		opts.MaxLineBytes = 8 << 20
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
	transport := opts.Transport
	if transport == nil {
		transport = providers.NewTransport(opts.ConnectTimeout)
	}
	// No http.Client.Timeout: it would bound reading the whole stream.
	httpClient := &http.Client{Transport: providers.Traced(transport)}
	cfg.HTTPClient = &doer{client: httpClient, headers: opts.Headers}

	p := &Provider{client: goopenai.NewClientWithConfig(cfg), http: httpClient, maxLine: opts.MaxLineBytes, azure: opts.Azure != nil, responses: opts.Responses}
	p.direct = &target{root: strings.TrimRight(opts.BaseURL, "/"), apiKey: opts.APIKey, org: opts.Organization, headers: opts.Headers}
	if opts.Azure != nil {
		// Azure's v1 API (no api-version), where the model is the
		// deployment's name.
		p.direct.root += "/openai/v1"
		p.direct.azure, p.direct.deployments = true, opts.Azure.Deployments
	}
	if opts.APIKey == "" && (opts.Azure != nil || strings.HasPrefix(opts.BaseURL, "https://api.openai.com")) {
		p.unavailable = fmt.Errorf("%w: its api_key is empty (set the environment variable config.yaml names, e.g. OPENAI_API_KEY, and restart)", providers.ErrUnavailable)
	}
	return p, nil
}

// CloseIdleConnections drops the provider's idle upstream connections
// (the gateway calls it when a reload replaces the provider, and at exit).
func (p *Provider) CloseIdleConnections() { p.http.CloseIdleConnections() }

// Unavailable says why the provider refuses calls, or nil when it serves.
func (p *Provider) Unavailable() error { return p.unavailable }

// doer adds the configured headers, remembers what an upstream said in
// Retry-After when it refused a call, and hands the body of an accepted
// stream to the gateway's stream, which reads it itself.
type doer struct {
	client  *http.Client
	headers map[string]string
}

type callKey struct{}

// call is per-request state the doer fills in.
type call struct {
	// stream says the call opens a stream whose body the doer takes.
	stream     bool
	retryAfter time.Duration
	body       io.ReadCloser
	conn       providers.ConnTrace
	waiter     *providers.Waiter
}

// errBodyTaken is what the doer answers go-openai with once it has taken
// an accepted stream's body: go-openai then returns at once, instead of
// wrapping the body in a 4 KiB reader, an error accumulator and a copy of
// the headers that nothing reads (a sixth of the bytes the gateway
// allocated per request: issue 18). Its error responses still go through
// go-openai, which decodes them.
var errBodyTaken = errors.New("openai: stream body taken by the gateway")

func (d *doer) Do(req *http.Request) (*http.Response, error) {
	for k, v := range d.headers {
		req.Header.Set(k, v)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return resp, err
	}
	c, ok := req.Context().Value(callKey{}).(*call)
	switch {
	case !ok:
	case resp.StatusCode < 200 || resp.StatusCode >= 400: // go-openai's failure statuses
		c.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
	case c.stream:
		// From here on the gateway reads the body alone.
		c.body, c.waiter = bodyOnly(resp), waiterOf(resp, &c.conn)
		return nil, errBodyTaken
	}
	return resp, nil
}

// bodyOnly is the body of an accepted stream's response, the one part the
// stream reads. net/http's body keeps its response (for the trailers),
// and the response its request and headers: the stream would hold the
// request (headers, URL, the encoded body: 1 to 2 KiB, or an agent's
// whole conversation) and the upstream's headers (some 600 bytes) for as
// long as it lasts (issue 18: memory per open stream). What a retry needs
// the gateway keeps itself.
func bodyOnly(resp *http.Response) io.ReadCloser {
	resp.Request, resp.Header = nil, nil
	return resp.Body
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
	if req.Prompt != "" {
		return p.complete(ctx, req)
	}
	if p.SpeaksNative(apiOf(req)) {
		return p.streamResponses(ctx, req)
	}
	creq, err := toUpstream(req)
	if err != nil {
		return nil, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: err.Error(), Err: err}
	}
	c := &call{stream: true}
	ctx = providers.WatchConn(context.WithValue(ctx, callKey{}, c), &c.conn)
	st, err := p.client.CreateChatCompletionStream(ctx, creq)
	if !errors.Is(err, errBodyTaken) {
		if err == nil { // cannot happen: the doer takes every accepted body
			st.Close()
			err = errors.New("openai: response body not taken")
		}
		// go-openai's Close panics on the stream it returns with an
		// error: there is nothing to close here.
		return nil, classify(err, c.retryAfter)
	}
	// The body is read and closed here.
	return &stream{body: c.body, events: newEventReader(c.body, p.maxLine, c.waiter)}, nil
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
		// Passed as the client sent it; a model without reasoning
		// refuses it with a 400 the client sees.
		ReasoningEffort:  req.ReasoningEffort,
		LogProbs:         req.OpenAI.LogProbs,
		LogitBias:        req.OpenAI.LogitBias,
		Metadata:         req.OpenAI.Metadata,
		ServiceTier:      goopenai.ServiceTier(req.OpenAI.ServiceTier),
		Verbosity:        req.OpenAI.Verbosity,
		SafetyIdentifier: req.OpenAI.SafetyIdentifier,
	}
	o := &req.OpenAI
	if o.FrequencyPenalty != nil {
		out.FrequencyPenalty = *o.FrequencyPenalty
	}
	if o.PresencePenalty != nil {
		out.PresencePenalty = *o.PresencePenalty
	}
	if o.TopLogProbs != nil {
		out.TopLogProbs = *o.TopLogProbs
	}
	if o.Store != nil {
		out.Store = *o.Store
	}
	if len(o.Prediction) > 0 {
		var p goopenai.Prediction
		if err := json.Unmarshal(o.Prediction, &p); err != nil {
			return out, fmt.Errorf("prediction: %w", err)
		}
		out.Prediction = &p
	}
	if req.ParallelToolCalls != nil {
		out.ParallelToolCalls = *req.ParallelToolCalls
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
		// An assistant turn's thinking goes back as reasoning_content:
		// DeepSeek's thinking mode with tools refuses a follow-up without
		// it.
		cm := goopenai.ChatCompletionMessage{Role: m.Role, Content: m.Content, Name: m.Name, ToolCallID: m.ToolCallID, ReasoningContent: m.Reasoning}
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

// stream reads the upstream's event stream itself: go-openai opened it
// (request, auth, Azure URLs, error statuses), but its reader runs regular
// expressions on every line and decodes every chunk by reflection, which
// made it the largest per-token cost of the gateway.
type stream struct {
	body   io.ReadCloser
	events *eventReader
	// legacy streams text_completion chunks (POST /completions).
	legacy bool
	done   bool // "data: [DONE]" was read
	// finished means a finish reason was seen.
	finished bool
	once     sync.Once
	// text holds the unescaped text of the latest chunk (decodeInto).
	text textBuffer
}

var doneMarker = []byte("[DONE]")

// Recv returns the next chunk with content, tool calls, a finish reason or
// usage; content-free chunks (the role chunk, empty deltas) and keep-alive
// comments are skipped.
func (s *stream) Recv() (providers.Chunk, error) {
	var c providers.Chunk
	for !s.done {
		data, err := s.events.next()
		if errors.Is(err, io.EOF) {
			// Closed without [DONE]: complete only if it said it finished.
			if !s.finished {
				return c, providers.ErrTruncated
			}
			s.done = true
			break
		}
		if err != nil {
			return c, classify(err, 0)
		}
		if bytes.Equal(data, doneMarker) {
			s.done = true
			if !s.finished {
				// [DONE] says the answer is complete even if no chunk
				// carried a finish reason (some servers omit it).
				s.finished = true
				return providers.Chunk{FinishReason: "stop"}, nil
			}
			break
		}
		// Called directly, not through a func value: that would move c
		// to the heap, an allocation per chunk.
		if s.legacy {
			err = decodeLegacy(data, &c)
		} else {
			err = decodeInto(data, &c, &s.text)
		}
		if err != nil {
			var pe *providers.Error
			if errors.As(err, &pe) {
				return providers.Chunk{}, err
			}
			return providers.Chunk{}, fmt.Errorf("%w: %w", providers.ErrMalformed, err)
		}
		if c.FinishReason != "" {
			s.finished = true
		}
		if !c.Delta() && c.FinishReason == "" && c.Usage == nil {
			continue
		}
		return c, nil
	}
	return providers.Chunk{}, io.EOF
}

// drainLimit bounds what Close reads after [DONE] so the connection can go
// back to the pool: normally just the end of the chunked body.
const drainLimit = 4 << 10

// Close releases the response. After a complete stream it first reads the
// rest of the body (a few bytes) so the connection is reused instead of
// torn down; if the upstream does not end the body within a second, the
// connection is closed after all.
func (s *stream) Close() error {
	var err error
	s.once.Do(func() {
		if s.done {
			t := time.AfterFunc(time.Second, func() { s.body.Close() })
			_, _ = io.CopyN(io.Discard, s.body, drainLimit)
			t.Stop()
		}
		err = s.body.Close()
		s.events.release()
	})
	return err
}

var _ providers.IdleNotifier = (*stream)(nil)

// NotifyIdle makes Recv call fn before it waits for the upstream.
func (s *stream) NotifyIdle(fn func()) { s.events.onIdle = fn }

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

var _ providers.Embedder = (*Provider)(nil)

// Embed computes embeddings with the upstream's /embeddings.
func (p *Provider) Embed(ctx context.Context, req *providers.EmbedRequest) (*providers.Embeddings, error) {
	if p.unavailable != nil {
		return nil, &providers.Error{Status: http.StatusServiceUnavailable, Code: "provider_not_configured", Message: p.unavailable.Error(), Err: p.unavailable}
	}
	c := &call{}
	resp, err := p.client.CreateEmbeddings(context.WithValue(ctx, callKey{}, c), goopenai.EmbeddingRequestStrings{
		Input: req.Input, Model: goopenai.EmbeddingModel(req.Model), Dimensions: req.Dimensions, User: req.User,
		// Asked for as floats: not every OpenAI-compatible server
		// speaks base64 (the gateway encodes it for clients itself).
		EncodingFormat: goopenai.EmbeddingEncodingFormatFloat,
	})
	if err != nil {
		return nil, classify(err, c.retryAfter)
	}
	out := &providers.Embeddings{Vectors: make([][]float32, len(req.Input)),
		Usage: providers.Usage{PromptTokens: resp.Usage.PromptTokens, TotalTokens: resp.Usage.TotalTokens}}
	for _, d := range resp.Data {
		if d.Index < 0 || d.Index >= len(out.Vectors) {
			return nil, fmt.Errorf("%w: embedding index %d of %d inputs", providers.ErrMalformed, d.Index, len(req.Input))
		}
		out.Vectors[d.Index] = d.Embedding
	}
	for i, v := range out.Vectors {
		if v == nil {
			return nil, fmt.Errorf("%w: no embedding for input %d", providers.ErrMalformed, i)
		}
	}
	return out, nil
}

// complete streams a legacy completion of req.Prompt from the upstream's
// /completions: the raw prompt, no chat template (code completion,
// vLLM's base models).
func (p *Provider) complete(ctx context.Context, req *providers.Request) (providers.Stream, error) {
	creq := goopenai.CompletionRequest{
		Model: req.Model, Prompt: req.Prompt, Suffix: req.Suffix, MaxTokens: req.MaxTokens, Stop: req.Stop, User: req.User, Seed: req.Seed,
		Stream: true, StreamOptions: &goopenai.StreamOptions{IncludeUsage: true},
		LogitBias: req.OpenAI.LogitBias, Metadata: req.OpenAI.Metadata,
	}
	if req.Temperature != nil {
		creq.Temperature = max(*req.Temperature, math.SmallestNonzeroFloat32)
	}
	if req.TopP != nil {
		creq.TopP = *req.TopP
	}
	if o := req.OpenAI; o.FrequencyPenalty != nil {
		creq.FrequencyPenalty = *o.FrequencyPenalty
	}
	if o := req.OpenAI; o.PresencePenalty != nil {
		creq.PresencePenalty = *o.PresencePenalty
	}
	if p.azure {
		return nil, providers.Unsupported("prompt", "azure")
	}
	body, err := json.Marshal(creq)
	if err != nil {
		return nil, err
	}
	rb, w, err := p.post(ctx, "/completions", body, nil)
	if err != nil {
		return nil, err
	}
	return &stream{body: rb, events: newEventReader(rb, p.maxLine, w), legacy: true}, nil
}

// post sends body to the upstream's path as a streaming request, with the
// provider's credentials and headers (after header, the client's own
// API headers, which the provider's override), and returns the accepted
// response's body (bodyOnly). An error status comes back as the error,
// classified as go-openai's would be. The Waiter is the response's
// connection's (waiterOf).
func (p *Provider) post(ctx context.Context, path string, body []byte, header map[string]string) (io.ReadCloser, *providers.Waiter, error) {
	t := p.direct
	var conn providers.ConnTrace
	hreq, err := http.NewRequestWithContext(providers.WatchConn(ctx, &conn), http.MethodPost, t.root+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	switch {
	case t.apiKey == "":
	case t.azure:
		hreq.Header.Set("api-key", t.apiKey)
	default:
		hreq.Header.Set("Authorization", "Bearer "+t.apiKey)
	}
	if t.org != "" {
		hreq.Header.Set("OpenAI-Organization", t.org)
	}
	for k, v := range header {
		hreq.Header.Set(k, v)
	}
	for k, v := range t.headers {
		hreq.Header.Set(k, v)
	}
	resp, err := p.http.Do(hreq)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode < 400 {
		w := waiterOf(resp, &conn)
		return bodyOnly(resp), w, nil
	}
	defer resp.Body.Close()
	var eb struct {
		Error *goopenai.APIError `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	apiErr := &goopenai.APIError{HTTPStatusCode: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
	if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
		apiErr = eb.Error
		apiErr.HTTPStatusCode = resp.StatusCode
	}
	return nil, nil, classify(apiErr, parseRetryAfter(resp.Header.Get("Retry-After")))
}

// waiterOf is the Waiter of the connection an accepted response came on,
// if it can have one: an HTTP/2 connection carries other streams.
func waiterOf(resp *http.Response, conn *providers.ConnTrace) *providers.Waiter {
	if resp.ProtoMajor != 1 || conn.Conn == nil {
		return nil
	}
	return providers.WaiterFor(conn.Conn)
}

// legacyChunk is a text_completion chunk, or an error object.
type legacyChunk struct {
	Choices []struct {
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *goopenai.Usage    `json:"usage"`
	Error *goopenai.APIError `json:"error"`
}

// decodeLegacy fills c from a text_completion chunk.
func decodeLegacy(data []byte, c *providers.Chunk) error {
	*c = providers.Chunk{}
	var l legacyChunk
	if err := json.Unmarshal(data, &l); err != nil {
		return err
	}
	if l.Error != nil {
		return classify(l.Error, 0)
	}
	if len(l.Choices) > 0 {
		c.Content, c.FinishReason = l.Choices[0].Text, l.Choices[0].FinishReason
	}
	c.Usage = usageOf(l.Usage)
	return nil
}
