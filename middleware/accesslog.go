package middleware

import (
	"log/slog"
	"time"

	"github.com/gin-gonic/gin"
	"go.opentelemetry.io/otel/trace"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/internal/offstack"
	"github.com/streamgate/gateway/outcome"
)

// AccessLog writes one line per request when it ends, with what the
// handlers recorded in Info. The line is written at warn level for 5xx
// answers and at info level otherwise.
func AccessLog(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		info := Get(c)
		info.Start = start
		c.Next()
		// Encoding and writing the line goes 7 KiB deep: off the
		// request's stack, which on a kept-alive HTTP/1.1 connection
		// serves the next stream too (see package offstack). Its own
		// function, because its attributes would take 1.5 KiB of
		// AccessLog's frame, under every handler for the whole stream.
		offstack.Run(func() { logRequest(log, c, info, start) })
	}
}

func logRequest(log *slog.Logger, c *gin.Context, info *Info, start time.Time) {
	status := c.Writer.Status()
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("request_id", info.RequestID),
		slog.String("method", c.Request.Method),
		slog.String("path", failure.Truncate(c.Request.URL.Path)),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
		slog.String("client_ip", c.ClientIP()),
	)
	if sc := trace.SpanContextFromContext(c.Request.Context()); sc.IsValid() {
		// The line and the trace find each other.
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
	}
	if info.KeyName != "" {
		attrs = append(attrs, slog.String("key", info.KeyName))
	}
	if info.Model != "" {
		attrs = append(attrs, slog.String("model", info.Model), slog.String("provider", info.Provider))
	}
	if info.Attempts > 1 {
		attrs = append(attrs, slog.Int("attempts", info.Attempts), slog.Int("fallbacks", info.Fallbacks))
	}
	if info.TTFT > 0 {
		attrs = append(attrs, slog.Duration("ttft", info.TTFT))
	}
	if info.PromptTokens > 0 || info.CompletionTokens > 0 {
		attrs = append(attrs, slog.Int("prompt_tokens", info.PromptTokens), slog.Int("completion_tokens", info.CompletionTokens))
		if info.CachedTokens > 0 {
			attrs = append(attrs, slog.Int("cached_tokens", info.CachedTokens))
		}
		if info.ReasoningTokens > 0 {
			attrs = append(attrs, slog.Int("reasoning_tokens", info.ReasoningTokens))
		}
		if info.CacheWriteTokens > 0 {
			attrs = append(attrs, slog.Int("cache_write_tokens", info.CacheWriteTokens))
		}
		if info.UsageEstimated {
			attrs = append(attrs, slog.Bool("usage_estimated", true))
		}
	}
	if info.Priced {
		attrs = append(attrs, slog.Float64("cost_usd", info.Cost))
	}
	if info.End != outcome.None {
		attrs = append(attrs, slog.String("end", info.End.String()))
	}
	if info.ErrorCode != "" {
		attrs = append(attrs, slog.String("error_code", info.ErrorCode), slog.String("error", info.Error))
	}
	level := slog.LevelInfo
	if status >= 500 || info.End == outcome.UpstreamError {
		level = slog.LevelWarn
	}
	// The record goes to the handler directly: Logger.LogAttrs would
	// walk the stack for the caller's PC (a third of its cost), and the
	// access line's source is always this line. No handler is set up to
	// print sources.
	ctx, h := c.Request.Context(), log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, "request", 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r)
}
