package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as a string in YAML ("500ms", "15s").
type Duration time.Duration

// UnmarshalYAML parses a Go duration string; a bad value is reported with
// its line and decoding goes on, so that every problem is listed at once.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "want a duration such as 500ms, 15s or 2m")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeError(n, fmt.Sprintf("%q is not a duration (want e.g. 500ms, 15s, 2m)", n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// EnvString is a string in which ${VAR} and ${VAR:-default} are replaced
// from the environment when the file is read. Only fields of this type (and
// Secret) expand variables: the rest of the file is taken literally.
type EnvString string

// UnmarshalYAML expands environment references in a scalar.
func (s *EnvString) UnmarshalYAML(n *yaml.Node) error {
	v, err := expandNode(n)
	*s = EnvString(v)
	return err
}

// Secret is an EnvString that never prints: String, GoString and
// MarshalYAML all redact it, so that a config dumped to a log or an error
// cannot leak it.
type Secret string

// Redacted is what a Secret prints as.
const Redacted = "[REDACTED]"

// UnmarshalYAML expands environment references in a scalar.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	v, err := expandNode(n)
	*s = Secret(v)
	return err
}

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString redacts the secret under %#v too.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalYAML redacts the secret.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

func expandNode(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", typeError(n, "want a string")
	}
	v, err := Expand(n.Value, os.LookupEnv)
	if err != nil {
		return "", typeError(n, err.Error())
	}
	return v, nil
}

// Expand replaces ${VAR} and ${VAR:-default} in s using lookup; "$$" stands
// for a literal "$". An unset variable without a default expands to "".
func Expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			b.WriteByte('$')
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unclosed ${ in %q", s)
		}
		ref := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("bad variable name %q in %q", name, s)
		}
		if v, ok := lookup(name); ok && (v != "" || !hasDef) {
			b.WriteString(v)
		} else {
			b.WriteString(def)
		}
		i += end
	}
	return b.String(), nil
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// typeError is how a custom unmarshaler reports a problem so that yaml.v3
// collects it with the others instead of stopping at the first one.
func typeError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

// Digest is the lower-case hex SHA-256 of the key's secret, from key or
// key_sha256; empty when neither is set.
func (k Key) Digest() string {
	if k.Key != "" {
		sum := sha256.Sum256([]byte(k.Key))
		return hex.EncodeToString(sum[:])
	}
	return strings.ToLower(k.KeySHA256)
}

// Merge returns l with the fields o sets replacing l's.
func (l Limits) Merge(o Limits) Limits {
	for _, f := range []struct{ dst, src **int }{
		{&l.RequestsPerMinute, &o.RequestsPerMinute}, {&l.Burst, &o.Burst}, {&l.ConcurrentStreams, &o.ConcurrentStreams},
		{&l.TokensPerMinute, &o.TokensPerMinute}, {&l.DefaultMaxTokens, &o.DefaultMaxTokens},
	} {
		if *f.src != nil {
			*f.dst = *f.src
		}
	}
	if o.Budget != nil {
		l.Budget = o.Budget
	}
	return l
}
