package relay

import (
	"github.com/streamgate/gateway/internal/tokens"
	"github.com/streamgate/gateway/providers"
)

// CountUsage stands in when an upstream reports no usage: the prompt and
// the answer counted with the o200k_base tokenizer (or, should it fail to
// load, the rough guess: four characters a prompt token, a token a delta).
// more is how many bytes of the answer came after those kept in answer:
// they are estimated at four bytes a token.
func CountUsage(req *providers.Request, answer []byte, more, deltas int) providers.Usage {
	u := providers.Usage{PromptTokens: tokens.Approx(req.Messages), CompletionTokens: deltas}
	if p, err := tokens.Prompt(req.Messages); err == nil {
		u.PromptTokens = p
	}
	if c, err := tokens.Count(string(answer)); err == nil {
		u.CompletionTokens = c + (more+3)/4
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}
