package mock

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/streamgate/gateway/providers"
)

var _ providers.Provider = (*Provider)(nil)

// Provider is the in-process mock.
type Provider struct {
	opts   Options
	script *script
}

// New returns a mock provider whose calls behave as opts says, unless a
// request carries directives of its own.
func New(opts Options) *Provider {
	return &Provider{opts: opts, script: newScript(opts.Reply)}
}

// StreamChat starts a mock reply. It fails before the stream opens when the
// options ask for a FailStatus.
func (p *Provider) StreamChat(ctx context.Context, req *providers.Request) (providers.Stream, error) {
	opts, promptTokens, err := p.prepare(req)
	if err != nil {
		return nil, &providers.Error{Status: http.StatusBadRequest, Code: "invalid_mock_directive", Message: err.Error(), Err: err}
	}
	if opts.FailStatus != 0 {
		return nil, failure(opts.FailStatus)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &stream{ctx: ctx, opts: opts, script: p.scriptFor(opts), promptTokens: promptTokens}, nil
}

// prepare applies the request's directives and max_tokens to the options.
func (p *Provider) prepare(req *providers.Request) (Options, int, error) {
	texts := make([]string, 0, len(req.Messages)+1)
	last := req.Prompt // a legacy completion's raw prompt
	if last != "" {
		texts = append(texts, last)
	}
	for i := range req.Messages {
		t := req.Messages[i].Text()
		texts = append(texts, t)
		if req.Messages[i].Role == "user" {
			last = t
		}
	}
	opts := p.opts
	if opts.Directives {
		var err error
		if opts, err = opts.WithDirectives(last); err != nil {
			return opts, 0, err
		}
	}
	return opts.capped(req.MaxTokens), CountTokens(texts...), nil
}

func (p *Provider) scriptFor(opts Options) *script {
	if opts.Reply == p.opts.Reply {
		return p.script
	}
	return newScript(opts.Reply)
}

// failure is the error of a call told to fail with status before the
// stream opens, worded like the upstreams it imitates.
func failure(status int) *providers.Error {
	return &providers.Error{
		Status:  status,
		Code:    "mock_failure",
		Message: fmt.Sprintf("mock upstream failed with status %d as configured", status),
	}
}

// midStreamFailure is the error of a stream told to fail after k tokens.
func midStreamFailure(k int) *providers.Error {
	return &providers.Error{
		Code:    "mock_failure",
		Message: fmt.Sprintf("mock upstream failed after %d tokens as configured", k),
	}
}

type stream struct {
	ctx          context.Context
	opts         Options
	script       *script
	promptTokens int

	sent     int  // content tokens returned so far
	thought  int  // reasoning tokens returned so far
	finished bool // the finish chunk has been returned
	timer    *time.Timer
	onIdle   func()

	closeOnce sync.Once
}

func (s *stream) Recv() (providers.Chunk, error) {
	if s.finished {
		return providers.Chunk{}, io.EOF
	}
	if j := s.thought; j < s.opts.Reasoning {
		if err := s.wait(s.opts.reasoningDelay(j)); err != nil {
			return providers.Chunk{}, err
		}
		s.thought++
		return providers.Chunk{Reasoning: thinking.token(j, s.opts.Reasoning)}, nil
	}
	i := s.sent
	switch s.opts.at(i) {
	case stepFail:
		return providers.Chunk{}, midStreamFailure(i)
	case stepMalformed:
		return providers.Chunk{}, fmt.Errorf("mock chunk %d: %w", i, providers.ErrMalformed)
	case stepStall:
		s.idle()
		<-s.ctx.Done()
		return providers.Chunk{}, s.ctx.Err()
	}
	if i >= s.opts.Tokens {
		s.finished = true
		return providers.Chunk{FinishReason: s.opts.finishReason(), Usage: &providers.Usage{
			PromptTokens:     s.promptTokens,
			CompletionTokens: s.thought + s.sent,
			TotalTokens:      s.promptTokens + s.thought + s.sent,
			ReasoningTokens:  s.thought,
		}}, nil
	}
	if err := s.wait(s.opts.delay(i)); err != nil {
		return providers.Chunk{}, err
	}
	s.sent++
	return providers.Chunk{Content: s.script.token(i, s.opts.Tokens)}, nil
}

// wait pauses for d or until the call is cancelled, reusing one timer for
// the whole stream.
func (s *stream) wait(d time.Duration) error {
	if d <= 0 {
		return s.ctx.Err()
	}
	s.idle()
	if s.timer == nil {
		s.timer = time.NewTimer(d)
	} else {
		s.timer.Reset(d)
	}
	select {
	case <-s.timer.C:
		return nil
	case <-s.ctx.Done():
		s.timer.Stop()
		return s.ctx.Err()
	}
}

var _ providers.IdleNotifier = (*stream)(nil)

// NotifyIdle makes Recv call fn before it pauses.
func (s *stream) NotifyIdle(fn func()) { s.onIdle = fn }

func (s *stream) idle() {
	if s.onIdle != nil {
		s.onIdle()
	}
}

func (s *stream) Close() error {
	s.closeOnce.Do(func() {
		if s.timer != nil {
			s.timer.Stop()
		}
	})
	return nil
}
