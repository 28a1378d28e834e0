// Package mock is the gateway's built-in model: deterministic, offline, and
// able to misbehave on request. The same behaviour is served two ways: as a
// Provider inside the gateway (Provider), and as an HTTP server speaking
// OpenAI's streaming wire format (Handler), so that tests and benchmarks can
// put a real network hop and the real openai provider in front of it.
package mock

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultReply is the text the mock streams, one word per token, when no
// reply is configured.
const DefaultReply = "This is a streamed reply from the gateway's built-in mock model. " +
	"Each word arrives as its own token, at the pace set in config.yaml, " +
	"so you can watch the answer grow on screen exactly as it would from a real model."

// Off disables a misbehaviour that is triggered at a token position.
const Off = -1

// Options says what one mock call does. The zero value is not useful: start
// from Defaults.
type Options struct {
	// Tokens is how many content tokens the reply has.
	Tokens int
	// TokenDelay is the pause before each token after the first.
	TokenDelay time.Duration
	// FirstTokenDelay is the pause before the first token.
	FirstTokenDelay time.Duration
	// FailStatus, when non-zero, makes the call fail with this HTTP status
	// before the stream opens.
	FailStatus int
	// FailAfter makes the stream fail after this many tokens (Off: never).
	FailAfter int
	// StallAfter makes the stream go silent after this many tokens until
	// the caller gives up (Off: never).
	StallAfter int
	// MalformedAfter makes the stream send an undecodable chunk after this
	// many tokens (Off: never).
	MalformedAfter int
	// Reply is the text whose words are streamed, cycling if Tokens is
	// larger than the number of words.
	Reply string
	// Reasoning is how many tokens of thinking come before the reply, as
	// a reasoning model streams them (at TokenDelay, the first after
	// FirstTokenDelay).
	Reasoning int
	// Directives lets a request's prompt change these options
	// (WithDirectives), within bounds; off, a directive is plain text.
	Directives bool

	cut bool // Tokens was lowered to honour max_tokens
}

// Defaults returns the options of a well-behaved mock.
func Defaults() Options {
	return Options{
		Tokens:         16,
		FailAfter:      Off,
		StallAfter:     Off,
		MalformedAfter: Off,
		Reply:          DefaultReply,
	}
}

// WithDirectives applies the per-request directives found in text, so that a
// single prompt can ask the mock to misbehave:
//
//	[mock tokens=5 delay=10ms first_delay=1s fail_status=503 fail_after=3 stall_after=2 malformed_after=1]
//
// Unknown or malformed directives are reported as an error.
func (o Options) WithDirectives(text string) (Options, error) {
	start := strings.Index(text, "[mock")
	if start < 0 {
		return o, nil
	}
	end := strings.IndexByte(text[start:], ']')
	if end < 0 {
		return o, fmt.Errorf("mock directive: missing ']'")
	}
	for _, field := range strings.Fields(text[start+len("[mock") : start+end]) {
		key, value, ok := strings.Cut(field, "=")
		if !ok {
			return o, fmt.Errorf("mock directive %q: want key=value", field)
		}
		if err := o.set(key, value); err != nil {
			return o, fmt.Errorf("mock directive %q: %w", field, err)
		}
	}
	return o, nil
}

// Bounds of what a directive may ask: a request must not be able to make
// the mock hold a connection or stream for long.
const (
	MaxDirectiveTokens     = 100000
	MaxDirectiveDelay      = 10 * time.Second
	MaxDirectiveFirstDelay = time.Minute
)

func (o *Options) set(key, value string) error {
	switch key {
	case "tokens":
		return setInt(&o.Tokens, value, 0, MaxDirectiveTokens)
	case "delay":
		return setDuration(&o.TokenDelay, value, MaxDirectiveDelay)
	case "first_delay":
		return setDuration(&o.FirstTokenDelay, value, MaxDirectiveFirstDelay)
	case "fail_status":
		return setInt(&o.FailStatus, value, 400, 599)
	case "fail_after":
		return setInt(&o.FailAfter, value, Off, MaxDirectiveTokens)
	case "stall_after":
		return setInt(&o.StallAfter, value, Off, MaxDirectiveTokens)
	case "malformed_after":
		return setInt(&o.MalformedAfter, value, Off, MaxDirectiveTokens)
	case "reasoning":
		return setInt(&o.Reasoning, value, 0, MaxDirectiveTokens)
	}
	return fmt.Errorf("unknown key %q", key)
}

func setInt(dst *int, value string, lo, hi int) error {
	n, err := strconv.Atoi(value)
	if err != nil || n < lo || n > hi {
		return fmt.Errorf("want a whole number from %d to %d", lo, hi)
	}
	*dst = n
	return nil
}

func setDuration(dst *time.Duration, value string, hi time.Duration) error {
	d, err := time.ParseDuration(value)
	if err != nil || d < 0 || d > hi {
		return fmt.Errorf("want a duration from 0s to %s", hi)
	}
	*dst = d
	return nil
}

// Thinking is the text a mock's reasoning tokens come from, one word a
// token, cycling.
const Thinking = "Let me think this through step by step before I answer: what is being asked, what I know, and how best to put it."

// thinking is Thinking as a script, shared by every call.
var thinking = newScript(Thinking)

// script is the precomputed token sequence of a reply, shared by every call
// with the same Reply so that streaming allocates nothing per token.
type script struct {
	words []string // each word with its trailing space, except the last
}

func newScript(reply string) *script {
	fields := strings.Fields(reply)
	if len(fields) == 0 {
		fields = strings.Fields(DefaultReply)
	}
	words := make([]string, len(fields))
	for i, f := range fields {
		words[i] = f + " "
	}
	return &script{words: words}
}

// token returns the i-th token of a reply of n tokens; the last token has
// no trailing space.
func (s *script) token(i, n int) string {
	w := s.words[i%len(s.words)]
	if i == n-1 {
		return w[:len(w)-1]
	}
	return w
}

// CountTokens is the mock's tokenizer: one token per whitespace-separated
// word, at least one per message. It makes usage figures predictable.
func CountTokens(texts ...string) int {
	n := 0
	for _, t := range texts {
		n += max(1, len(strings.Fields(t)))
	}
	return n
}

// capped limits the reply to maxTokens, as a model does with max_tokens;
// a reply cut this way finishes with "length".
func (o Options) capped(maxTokens int) Options {
	if maxTokens > 0 && maxTokens < o.Tokens {
		o.Tokens = maxTokens
		o.cut = true
	}
	return o
}

func (o Options) finishReason() string {
	if o.cut {
		return "length"
	}
	return "stop"
}

// step is what a mock does at token position i.
type step int

const (
	stepToken     step = iota // wait, then send token i
	stepFail                  // fail the stream
	stepMalformed             // send an undecodable chunk
	stepStall                 // go silent until the caller leaves
)

// at is the one schedule of misbehaviour that the provider and the HTTP
// handler both follow.
func (o *Options) at(i int) step {
	switch i {
	case o.FailAfter:
		return stepFail
	case o.MalformedAfter:
		return stepMalformed
	case o.StallAfter:
		return stepStall
	}
	return stepToken
}

// reasoningDelay is the pause before thinking token i.
func (o *Options) reasoningDelay(i int) time.Duration {
	if i == 0 {
		return o.FirstTokenDelay
	}
	return o.TokenDelay
}

// delay is the pause before token i (after any thinking).
func (o *Options) delay(i int) time.Duration {
	if i == 0 && o.Reasoning == 0 {
		return o.FirstTokenDelay
	}
	return o.TokenDelay
}
