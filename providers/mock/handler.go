package mock

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/streamgate/gateway/internal/jsonstr"
)

// Handler serves POST /v1/chat/completions (and /chat/completions) the way
// OpenAI does, streaming or not, with the behaviour opts describes; a
// request can override it with directives in its last user message (see
// Options.WithDirectives). The stream is byte for byte OpenAI's: a role
// chunk, one chunk per content token, a finish chunk, a usage chunk when
// stream_options.include_usage is set, then "data: [DONE]".
func Handler(opts Options) http.Handler {
	h := &handler{opts: opts, script: newScript(opts.Reply)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", h.chat)
	mux.HandleFunc("POST /chat/completions", h.chat)
	return mux
}

type handler struct {
	opts   Options
	script *script
	seq    atomic.Uint64
}

type wireRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           int `json:"max_tokens"`
	MaxCompletionTokens int `json:"max_completion_tokens"`
	Messages            []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

// text returns a message content that is either a string or an array of
// parts, as OpenAI accepts both.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	_ = json.Unmarshal(raw, &parts)
	for _, p := range parts {
		s += p.Text
	}
	return s
}

func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"message":%s,"type":%q,"param":null,"code":%q}}`+"\n", jsonstr.Append(nil, msg), typ, code)
}

func (h *handler) chat(w http.ResponseWriter, r *http.Request) {
	var req wireRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "invalid JSON body: "+err.Error())
		return
	}
	texts := make([]string, 0, len(req.Messages))
	last := ""
	for _, m := range req.Messages {
		t := text(m.Content)
		texts = append(texts, t)
		if m.Role == "user" {
			last = t
		}
	}
	opts, err := h.opts.WithDirectives(last)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_mock_directive", err.Error())
		return
	}
	opts = opts.capped(max(req.MaxTokens, req.MaxCompletionTokens))
	if opts.FailStatus != 0 {
		if opts.FailStatus == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, opts.FailStatus, "server_error", "mock_failure", failure(opts.FailStatus).Message)
		return
	}
	s := h.script
	if opts.Reply != h.opts.Reply {
		s = newScript(opts.Reply)
	}
	c := call{
		opts:         opts,
		script:       s,
		id:           "chatcmpl-mock-" + strconv.FormatUint(h.seq.Add(1), 10),
		created:      time.Now().Unix(),
		model:        req.Model,
		promptTokens: CountTokens(texts...),
	}
	if !req.Stream {
		c.complete(w, r)
		return
	}
	c.includeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	c.stream(w, r)
}

// call is one mock completion being served.
type call struct {
	opts         Options
	script       *script
	id           string
	created      int64
	model        string
	promptTokens int
	includeUsage bool
}

// pause waits d or until the client leaves; it reports whether to go on.
func pause(r *http.Request, t *time.Timer, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}
	t.Reset(d)
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		t.Stop()
		return false
	}
}

func (c *call) stream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)

	// Every chunk starts with the same bytes up to the delta.
	prefix := make([]byte, 0, 160)
	prefix = append(prefix, `data: {"id":"`...)
	prefix = append(prefix, c.id...)
	prefix = append(prefix, `","object":"chat.completion.chunk","created":`...)
	prefix = strconv.AppendInt(prefix, c.created, 10)
	prefix = append(prefix, `,"model":`...)
	prefix = jsonstr.Append(prefix, c.model)
	prefix = append(prefix, `,"system_fingerprint":"fp_mock","choices":[`...)
	choice := append(append([]byte(nil), prefix...), `{"index":0,"delta":`...)

	buf := make([]byte, 0, 512)
	send := func() bool {
		_, err := w.Write(buf)
		return err == nil && rc.Flush() == nil
	}
	buf = append(append(buf[:0], choice...), `{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
	if !send() {
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for j := 0; j < c.opts.Reasoning; j++ {
		if !pause(r, timer, c.opts.reasoningDelay(j)) {
			return
		}
		// DeepSeek's and vLLM's field for thinking.
		buf = append(append(buf[:0], choice...), `{"content":null,"reasoning_content":`...)
		buf = jsonstr.Append(buf, thinking.token(j, c.opts.Reasoning))
		buf = append(buf, `},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
		if !send() {
			return
		}
	}
	n := c.opts.Tokens
	for i := 0; i < n; i++ {
		switch c.opts.at(i) {
		case stepFail:
			buf = append(buf[:0], `data: {"error":{"message":`...)
			buf = jsonstr.Append(buf, midStreamFailure(i).Message)
			buf = append(buf, `,"type":"server_error","param":null,"code":"mock_failure"}}`+"\n\n"...)
			send()
			return
		case stepMalformed:
			buf = append(append(buf[:0], choice...), `{"content":"broken`+"\n\n"...)
			send()
			return
		case stepStall:
			<-r.Context().Done()
			return
		}
		if !pause(r, timer, c.opts.delay(i)) {
			return
		}
		buf = append(append(buf[:0], choice...), `{"content":`...)
		buf = jsonstr.Append(buf, c.script.token(i, n))
		buf = append(buf, `},"logprobs":null,"finish_reason":null}]}`+"\n\n"...)
		if !send() {
			return
		}
	}
	buf = append(append(buf[:0], choice...), `{},"logprobs":null,"finish_reason":"`...)
	buf = append(buf, c.opts.finishReason()...)
	buf = append(buf, `"}]}`+"\n\n"...)
	if c.includeUsage {
		buf = append(buf, prefix...)
		buf = append(buf, `],"usage":`...)
		buf = c.appendUsage(buf)
		buf = append(buf, "}\n\n"...)
	}
	buf = append(buf, "data: [DONE]\n\n"...)
	send()
}

func (c *call) appendUsage(buf []byte) []byte {
	n := c.opts.Tokens + c.opts.Reasoning
	buf = append(buf, `{"prompt_tokens":`...)
	buf = strconv.AppendInt(buf, int64(c.promptTokens), 10)
	buf = append(buf, `,"completion_tokens":`...)
	buf = strconv.AppendInt(buf, int64(n), 10)
	buf = append(buf, `,"total_tokens":`...)
	buf = strconv.AppendInt(buf, int64(c.promptTokens+n), 10)
	if c.opts.Reasoning > 0 {
		buf = append(buf, `,"completion_tokens_details":{"reasoning_tokens":`...)
		buf = strconv.AppendInt(buf, int64(c.opts.Reasoning), 10)
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// complete answers a request with stream=false: the whole reply at once,
// after the same delays a stream would have taken.
func (c *call) complete(w http.ResponseWriter, r *http.Request) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var reasoning []byte
	for j := 0; j < c.opts.Reasoning; j++ {
		if !pause(r, timer, c.opts.reasoningDelay(j)) {
			return
		}
		reasoning = append(reasoning, thinking.token(j, c.opts.Reasoning)...)
	}
	n := c.opts.Tokens
	content := make([]byte, 0, n*8)
	for i := 0; i < n; i++ {
		switch c.opts.at(i) {
		case stepFail, stepMalformed:
			writeError(w, http.StatusInternalServerError, "server_error", "mock_failure", midStreamFailure(i).Message)
			return
		case stepStall:
			<-r.Context().Done()
			return
		}
		if !pause(r, timer, c.opts.delay(i)) {
			return
		}
		content = append(content, c.script.token(i, n)...)
	}
	buf := make([]byte, 0, len(content)+256)
	buf = append(buf, `{"id":"`...)
	buf = append(buf, c.id...)
	buf = append(buf, `","object":"chat.completion","created":`...)
	buf = strconv.AppendInt(buf, c.created, 10)
	buf = append(buf, `,"model":`...)
	buf = jsonstr.Append(buf, c.model)
	buf = append(buf, `,"system_fingerprint":"fp_mock","choices":[{"index":0,"message":{"role":"assistant","content":`...)
	buf = jsonstr.Append(buf, string(content))
	if len(reasoning) > 0 {
		buf = append(buf, `,"reasoning_content":`...)
		buf = jsonstr.Append(buf, string(reasoning))
	}
	buf = append(buf, `,"refusal":null},"logprobs":null,"finish_reason":"`...)
	buf = append(buf, c.opts.finishReason()...)
	buf = append(buf, `"}],"usage":`...)
	buf = c.appendUsage(buf)
	buf = append(buf, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf)
}
