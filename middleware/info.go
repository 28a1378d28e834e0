package middleware

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/outcome"
)

// Info is what a request's handlers learn that belongs in its access-log
// line. Handlers fill it in; AccessLog writes it out once the request ends.
type Info struct {
	RequestID string
	// Start is when the request arrived: time to first token and
	// durations count from it.
	Start time.Time
	// KeyName names the API key used (never the key itself); empty when
	// auth is off.
	KeyName  string
	Model    string
	Provider string
	// System is the kind of the provider that answered (openai,
	// anthropic, mock), for traces.
	System string
	// Attempts counts the upstream calls made; Fallbacks how often the
	// request moved on to another route before its first delta.
	Attempts  int
	Fallbacks int
	// TTFT is the time from the request's arrival to the first token
	// relayed; zero when none was.
	TTFT             time.Duration
	PromptTokens     int
	CompletionTokens int
	// CachedTokens (of the prompt, read from the upstream's cache) and
	// ReasoningTokens (of the completion, spent thinking), where the
	// upstream reports them.
	CachedTokens    int
	ReasoningTokens int
	// CacheWriteTokens are prompt tokens written to the upstream's
	// prompt cache (Anthropic).
	CacheWriteTokens int
	// UsageEstimated says the gateway counted the tokens, the upstream
	// having reported none.
	UsageEstimated bool
	// Deployment is the upstream model that answered.
	Deployment string
	// Cost is what the request cost in dollars, when Priced.
	Cost   float64
	Priced bool
	// Endpoint labels the API the request came in by (chat, messages,
	// responses, native, embeddings), for generation requests.
	Endpoint string
	// Status is the HTTP status the request was answered with, once
	// known to the engine (200 for a stream, whatever its end).
	Status int
	// End says how a stream ended; None for requests that did not
	// stream.
	End outcome.End
	// FinishReason is the upstream's reason for ending its answer
	// (stop, length, tool_calls...), where it gave one.
	FinishReason string
	// ErrorCode and Error describe a failure; Error never holds secrets.
	ErrorCode string
	Error     string
}

// Get returns the request's Info, creating it on first use.
//
// The Info rides on the request's writer rather than in gin's Keys: a
// map made for one entry costs some 300 bytes a request, which a stream
// holds for as long as it lasts (issue 18: memory per open stream), and
// each lookup a lock. Nothing in the gateway replaces c.Writer after
// this; if something did, the next Get would carry a new Info on top.
func Get(c *gin.Context) *Info {
	if w, ok := c.Writer.(*infoWriter); ok {
		return &w.info
	}
	w := &infoWriter{ResponseWriter: c.Writer}
	c.Writer = w
	return &w.info
}

// infoWriter is the request's writer carrying its Info.
type infoWriter struct {
	gin.ResponseWriter
	info Info
}

// Unwrap lets http.ResponseController reach the connection's writer
// (write deadlines, flushes).
func (w *infoWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Failed records that the request was answered with e.
func (i *Info) Failed(e *failure.Error) {
	i.ErrorCode, i.Error = e.Code, e.Message
	if e.Status == failure.StatusClientClosedRequest {
		i.End = outcome.ClientGone
	}
}
