package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse loads arbitrary files as config. Whatever arrives: no panic;
// a refusal is a *Error listing at least one problem; an accepted config
// passes validation (its timeouts and bounds are sane) and never prints a
// secret.
func FuzzParse(f *testing.F) {
	shipped, err := os.ReadFile("../config.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shipped)
	f.Add([]byte("auth: {enabled: false}\nproviders:\n  m: {type: mock}\nmodels:\n  a: {routes: [{provider: m}]}\n"))
	f.Add([]byte("auth: {enabled: true}\nkeys:\n  k: {key: sk-0123456789abcdef, admin: true, limits: {requests_per_minute: -1}}\nproviders:\n  o: {type: openai, api_key: ${KEY:-x}, first_token_timeout: -1s}\nmodels:\n  a: {strategy: weighted, routes: [{provider: o, weight: -2}]}\n"))
	f.Add([]byte("server: {listen: nowhere, max_body_bytes: 0, metrics: {listen: x}}\nstreams: {max_readers: 0}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("refusal without problems: %v", err)
			}
			return
		}
		if first, idle, stream := cfg.Server.BodyTimeout, cfg.Server.HeartbeatInterval, cfg.Server.ShutdownTimeout; first < 0 || idle < 0 || stream < 0 {
			t.Fatalf("accepted negative durations: %+v", cfg.Server)
		}
		for name, p := range cfg.Providers {
			if a, b, c := p.Timeouts(); a < 0 || b < 0 || c < 0 {
				t.Fatalf("provider %s: negative timeouts accepted", name)
			}
			if k := p.APIKey.Reveal(); len(k) > 3 && strings.Contains(p.APIKey.String(), k) {
				t.Fatalf("provider %s: its key prints", name)
			}
		}
	})
}
