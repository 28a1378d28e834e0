// Package tokens counts tokens with OpenAI's o200k_base encoding, for usage
// figures the gateway must estimate because an upstream reported none. The
// encoding ships inside the binary (tiktoken-go-loader's offline loader)
// and is parsed on first use only, since most upstreams report usage.
package tokens

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/streamgate/gateway/providers"
)

var enc struct {
	once sync.Once
	tk   *tiktoken.Tiktoken
	err  error
}

func encoding() (*tiktoken.Tiktoken, error) {
	enc.once.Do(func() {
		tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
		enc.tk, enc.err = tiktoken.GetEncoding(tiktoken.MODEL_O200K_BASE)
		if enc.err != nil {
			enc.err = fmt.Errorf("load o200k_base: %w", enc.err)
		}
	})
	return enc.tk, enc.err
}

// The tokenizer's merging is quadratic in the length of one unbroken
// word, so a long answer without spaces (an upstream can send a megabyte)
// would pin a core for minutes. Text is therefore counted in segments of
// at most maxSegment bytes, cut at white space where possible (where the
// tokenizer splits anyway, so ordinary text counts the same); a segment
// holding a word longer than maxWord bytes (no natural language has one:
// base64, minified code, a hostile upstream) is estimated at four bytes a
// token rather than merged, and so is all text past maxText bytes. The
// work per byte is then bounded by maxWord, whatever the text.
const (
	maxSegment = 1 << 10
	maxWord    = 64
	maxText    = 256 << 10
)

// longWord reports whether s has a run of more than maxWord bytes without
// white space.
func longWord(s string) bool {
	run := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\n', '\t', '\r':
			run = 0
		default:
			if run++; run > maxWord {
				return true
			}
		}
	}
	return false
}

// Count returns the number of tokens in text.
func Count(text string) (int, error) {
	tk, err := encoding()
	if err != nil {
		return 0, err
	}
	n := 0
	if len(text) > maxText {
		n += (len(text) - maxText + 3) / 4
		text = text[:maxText]
	}
	for len(text) > 0 {
		cut := len(text)
		if cut > maxSegment {
			cut = strings.LastIndexAny(text[:maxSegment], " \n\t")
			if cut <= 0 {
				cut = maxSegment
				for cut > 0 && !utf8.RuneStart(text[cut]) {
					cut--
				}
			}
		}
		if seg := text[:cut]; longWord(seg) {
			n += (len(seg) + 3) / 4
		} else {
			n += len(tk.Encode(seg, nil, nil))
		}
		text = text[cut:]
	}
	return n, nil
}

// Prompt counts a chat prompt as OpenAI's chat models bill it: each
// message's text, role and name, 3 tokens of framing per message, and 3
// priming the reply.
func Prompt(msgs []providers.Message) (int, error) {
	tk, err := encoding()
	if err != nil {
		return 0, err
	}
	n := 3
	for i := range msgs {
		m := &msgs[i]
		text, err := Count(m.Text())
		if err != nil {
			return 0, err
		}
		n += 3 + text + len(tk.Encode(m.Role, nil, nil))
		if m.Name != "" {
			n += 1 + len(tk.Encode(m.Name, nil, nil))
		}
	}
	return n, nil
}

// Approx is a cheap guess at the size of msgs (four characters a token),
// for reserving tokens at admission, where counting would cost too much.
func Approx(msgs []providers.Message) int {
	chars := 0
	for i := range msgs {
		chars += len(msgs[i].Text())
	}
	return max(1, chars/4)
}

// ApproxTexts is Approx for plain texts (embedding inputs).
func ApproxTexts(texts ...string) int {
	chars := 0
	for _, t := range texts {
		chars += len(t)
	}
	return max(1, chars/4)
}

// Input counts the input of a request: its messages as Prompt does, the
// arguments of the tool calls they hold, and the tools it offers (name,
// description and schema). Should the tokenizer fail to load, it falls
// back to ApproxInput.
func Input(msgs []providers.Message, tools []providers.Tool) int {
	n, err := Prompt(msgs)
	if err != nil {
		return ApproxInput(msgs, tools)
	}
	for _, t := range extras(msgs, tools) {
		c, err := Count(t)
		if err != nil {
			c = ApproxTexts(t)
		}
		n += c
	}
	return n
}

// ApproxInput is Input's cheap guess (four characters a token), for what
// is said before the upstream counts: the first event of a stream.
func ApproxInput(msgs []providers.Message, tools []providers.Tool) int {
	return Approx(msgs) + ApproxTexts(extras(msgs, tools)...)
}

// extras are the texts of a request besides its messages' text.
func extras(msgs []providers.Message, tools []providers.Tool) []string {
	var extra []string
	for i := range msgs {
		for _, tc := range msgs[i].ToolCalls {
			extra = append(extra, tc.Function.Name, tc.Function.Arguments)
		}
	}
	for _, t := range tools {
		extra = append(extra, t.Function.Name, t.Function.Description, string(t.Function.Parameters))
	}
	return extra
}
