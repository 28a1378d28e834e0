package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestShippedConfigIsValid(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "")
	cfg, err := Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Providers["mock"].Type != TypeMock || len(cfg.Models) == 0 || cfg.Server.HeartbeatInterval.Std() != 15*time.Second {
		t.Errorf("unexpected shipped config: %+v", cfg)
	}
	if got := string(cfg.Providers["openai"].BaseURL); got != "https://api.openai.com/v1" {
		t.Errorf("base_url default through ${VAR:-default} = %q", got)
	}
}

func TestDefaultsApply(t *testing.T) {
	cfg, err := Parse("x.yaml", []byte("auth: {enabled: false}\nproviders:\n  m:\n    type: mock\nmodels:\n  a:\n    routes: [{provider: m}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != "127.0.0.1:8080" || cfg.Server.MaxBodyBytes != 1<<20 || cfg.Server.ShutdownTimeout.Std() != 30*time.Second || cfg.Server.Log.Level != "info" || cfg.Server.Log.FlushInterval.Std() != 100*time.Millisecond {
		t.Errorf("defaults not applied: %+v", cfg.Server)
	}
}

const good = `server:
  listen: 127.0.0.1:9090
providers:
  m:
    type: mock
  o:
    type: openai
    base_url: http://127.0.0.1:11434/v1
models:
  a:
    routes:
      - provider: m
auth: {enabled: false}
`

// TestProblemsAreReported mutates a good file and checks that the error
// names the field, the value and the line.
func TestProblemsAreReported(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings of the error, in any order
	}{
		{"unknown top-level key", good + "extra: 1\n", []string{`line 14: unknown field "extra" at the top level`}},
		{"unknown nested key", strings.Replace(good, "    type: mock\n", "    type: mock\n    tokns: 3\n", 1), []string{`line 6: unknown field "tokns" in provider settings`}},
		{"bad duration", strings.Replace(good, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n  heartbeat_interval: 15 seconds\n", 1), []string{`line 3: "15 seconds" is not a duration`}},
		{"wrong type", strings.Replace(good, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n  max_body_bytes: lots\n", 1), []string{"line 3:", `"lots"`, "int64"}},
		{"negative gc floor", strings.Replace(good, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n  gc_heap_floor_bytes: -1\n", 1), []string{"line 3: server.gc_heap_floor_bytes: -1 is negative"}},
		{"missing provider", strings.Replace(good, "provider: m\n", "provider: nope\n", 1), []string{`line 12: models.a.routes[0].provider: "nope" is not a configured provider (have: m, o)`}},
		{"route without provider", strings.Replace(good, "      - provider: m\n", "      - model: x\n", 1), []string{"line 12: models.a.routes[0].provider: is required"}},
		{"model without routes", strings.Replace(good, "    routes:\n      - provider: m\n", "    routes: []\n", 1), []string{"line 11: models.a.routes: at least one route is required"}},
		{"missing type", strings.Replace(good, "    type: mock\n", "    mock: {tokens: 3}\n", 1), []string{"line 4: providers.m.type: is required"}},
		{"unknown type", strings.Replace(good, "type: mock", "type: anthropics", 1), []string{`line 5: providers.m.type: "anthropics" is not a provider type`}},
		{"bad base_url", strings.Replace(good, "http://127.0.0.1:11434/v1", "localhost:11434", 1), []string{`line 8: providers.o.base_url: "localhost:11434" is not an http(s) URL`}},
		{"bad listen", strings.Replace(good, "127.0.0.1:9090", "9090", 1), []string{`line 2: server.listen: "9090" is not a host:port`}},
		{"bad log level", good + "", nil},
		{"log flush too slow", strings.Replace(good, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n  log:\n    flush_interval: 1m\n", 1), []string{`line 4: server.log.flush_interval: 1m0s is outside 0 to 10s`}},
		{"no models", strings.Split(good, "models:")[0] + "auth: {enabled: false}\n", []string{"models: at least one model is required"}},
		{"bad origin", strings.Replace(good, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n  cors:\n    allowed_origins: [\"chat.example.com/app\"]\n", 1), []string{`line 4: server.cors.allowed_origins[0]: "chat.example.com/app" is not an origin`}},
		{"bad fail_status", strings.Replace(good, "    type: mock\n", "    type: mock\n    mock:\n      fail_status: 200\n", 1), []string{"line 7: providers.m.mock.fail_status: 200 is not an HTTP error status"}},
		{"mock with api key", strings.Replace(good, "    type: mock\n", "    type: mock\n    api_key: x\n", 1), []string{"providers.m.type: a mock provider takes only mock settings"}},
		{"mock with responses_api", strings.Replace(good, "    type: mock\n", "    type: mock\n    responses_api: true\n", 1), []string{"providers.m.type: a mock provider takes only mock settings", "responses_api"}},
		{"unclosed variable", strings.Replace(good, "http://127.0.0.1:11434/v1", "${OLLAMA_URL", 1), []string{"line 8: unclosed ${"}},
		{"several at once", strings.Replace(strings.Replace(good, "provider: m\n", "provider: nope\n", 1), "type: mock", "type: bad", 1),
			[]string{`providers.m.type: "bad"`, `"nope" is not a configured provider`, "2 problem(s)"}},
		{"public pprof", strings.Replace(good, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n  pprof_listen: 0.0.0.0:6060\n", 1), []string{`line 3: server.pprof_listen: "0.0.0.0:6060" must be a loopback host:port`}},
		{"bad strategy", strings.Replace(good, "    routes:\n", "    strategy: round_robin\n    routes:\n", 1), []string{`models.a.strategy: "round_robin" is not one of fallback, weighted, least_busy, fastest`}},
		{"bad override", strings.Replace(good, "    routes:\n", "    drop: [temprature]\n    force: {reasoning_effort: extreme}\n    routes:\n", 1), []string{`models.a.drop: "temprature" is not one of temperature`, `models.a.force.reasoning_effort: "extreme" is not one of minimal`}},
		{"bad aliases", strings.Replace(good, "    routes:\n", "    aliases: [a, \"*\", \"c*x*\", claude-*, claude-*]\n    routes:\n", 1), []string{
			`models.a.aliases[0]: "a" is a model's own name`, `models.a.aliases[1]: "*" names nothing`,
			`models.a.aliases[2]: "c*x*" has a * before its end`, `models.a.aliases[4]: "claude-*" is already an alias of model a`}},
		{"syntax error", "server:\n  listen: [unclosed\n", []string{"line"}},
		{"empty file", "", []string{"file is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == nil {
				tc.yaml = strings.Replace(good, "  listen: 127.0.0.1:9090\n", "  listen: 127.0.0.1:9090\n  log:\n    level: loud\n", 1)
				tc.want = []string{`line 4: server.log.level: "loud" is not one of debug, info, warn, error`}
			}
			_, err := Parse("test.yaml", []byte(tc.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *config.Error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("GW_KEY", "sk-from-env")
	t.Setenv("GW_EMPTY", "")
	yaml := `auth: {enabled: false}
providers:
  o:
    type: openai
    base_url: ${GW_URL:-http://127.0.0.1:8000/v1}
    api_key: ${GW_KEY}
    organization: org-${GW_EMPTY:-none}
    headers:
      X-Price: "$$5 ${GW_KEY}"
models:
  a:
    routes: [{provider: o, model: "${GW_KEY}"}]
`
	cfg, err := Parse("x.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Providers["o"]
	if p.BaseURL != "http://127.0.0.1:8000/v1" || p.APIKey.Reveal() != "sk-from-env" || p.Organization != "org-none" || p.Headers["X-Price"].Reveal() != "$5 sk-from-env" {
		t.Errorf("expansion: %q %q %q %q", p.BaseURL, p.APIKey.Reveal(), p.Organization, p.Headers["X-Price"].Reveal())
	}
	// Fields that do not opt in are taken literally.
	if got := cfg.Models["a"].Routes[0].Model; got != "${GW_KEY}" {
		t.Errorf("model name was expanded to %q", got)
	}
}

func TestSecretsDoNotPrint(t *testing.T) {
	t.Setenv("GW_KEY", "sk-very-secret")
	cfg, err := Parse("x.yaml", []byte("auth: {enabled: false}\nproviders:\n  o:\n    type: openai\n    api_key: ${GW_KEY}\n    headers:\n      X-Token: ${GW_KEY}\nmodels:\n  a:\n    routes: [{provider: o}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(format, cfg.Providers["o"]); strings.Contains(out, "sk-very-secret") {
			t.Errorf("%s prints the secret: %s", format, out)
		}
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "E": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for in, want := range map[string]string{
		"plain": "plain", "${A}": "1", "x${A}y": "x1y", "${B}": "", "${B:-d}": "d", "${E:-d}": "d", "${E}": "",
		"$$": "$", "$A": "$A", "cost $5": "cost $5", "$${A}": "${A}",
	} {
		got, err := Expand(in, lookup)
		if err != nil || got != want {
			t.Errorf("Expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"${", "${A", "${1A}", "${}"} {
		if _, err := Expand(bad, lookup); err == nil {
			t.Errorf("Expand(%q) succeeded", bad)
		}
	}
}

func TestKeysValidation(t *testing.T) {
	t.Setenv("GW_K1", "sk-same")
	base := strings.Replace(good, "auth: {enabled: false}\n", "", 1)
	for _, tc := range []struct {
		name, keys string
		want       []string
	}{
		{"auth on without keys", "", []string{"keys: auth is enabled but no keys are configured"}},
		{"no secret", "keys:\n  k:\n    models: [a]\n", []string{"keys.k: needs key"}},
		{"both forms", "keys:\n  k:\n    key: x\n    key_sha256: " + strings.Repeat("a", 64) + "\n", []string{"keys.k: give key or key_sha256, not both"}},
		{"bad hash", "keys:\n  k:\n    key_sha256: abc\n", []string{"keys.k.key_sha256: is not 64 hex digits"}},
		{"same secret twice", "keys:\n  k1:\n    key: ${GW_K1}\n  k2:\n    key: sk-same\n", []string{"keys.k2: has the same secret as keys.k1"}},
		{"unknown model", "keys:\n  k:\n    key: x\n    models: [nope]\n", []string{`keys.k.models[0]: "nope" is not a configured model`}},
		{"zero limit", "keys:\n  k:\n    key: x\n    limits: {requests_per_minute: 0}\n", []string{"keys.k.limits.requests_per_minute: 0 must be at least 1"}},
		{"bad proxy", "auth:\n  enabled: false\n  trusted_proxies: [10.0.0.0/33]\n", []string{`auth.trusted_proxies[0]: "10.0.0.0/33" is not an IP address or CIDR`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(base+tc.keys))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	cfg, err := Parse("test.yaml", []byte(base+"keys:\n  k:\n    key: x\n    limits: {burst: 3}\nrate_limit:\n  defaults: {requests_per_minute: 60, burst: 10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	merged := cfg.RateLimit.Defaults.Merge(cfg.Keys["k"].Limits)
	if *merged.RequestsPerMinute != 60 || *merged.Burst != 3 || merged.ConcurrentStreams != nil {
		t.Errorf("merged limits: %+v", merged)
	}
}

func TestStreamsValidation(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"bad backend", "streams:\n  backend: disk\n", []string{`line 15: streams.backend: "disk" is not a backend (want memory or redis)`}},
		{"redis without secret", "streams:\n  backend: redis\n  redis: {addr: 127.0.0.1:6379}\n", []string{"streams.token_secret: must be set, at least 16 characters, with backend redis"}},
		{"redis without address", "streams:\n  backend: redis\n  token_secret: 0123456789abcdef0123\n", []string{`rate_limit.redis.addr: "" is not a host:port address`}},
		{"short secret", "streams:\n  token_secret: short\n", []string{"line 15: streams.token_secret: is shorter than 16 characters"}},
		{"bad policy", "streams:\n  last_reader: linger\n", []string{`line 15: streams.last_reader: "linger" is not one of cancel, continue, drain`}},
		{"bad model policy", "", []string{`line 11: models.a.last_reader: "stay" is not one of cancel, continue, drain`}},
		{"zero grace", "streams:\n  last_reader_grace: 0s\n", []string{"streams.last_reader_grace: 0s must be positive"}},
		{"total below one stream", "streams:\n  max_stream_bytes: 2000\n  max_total_bytes: 1000\n", []string{"streams.max_total_bytes: 1000 is less than max_stream_bytes (2000)"}},
		{"short lease", "streams:\n  backend: redis\n  redis: {addr: 127.0.0.1:6379}\n  token_secret: 0123456789abcdef0123\n  lease_ttl: 100ms\n", []string{"streams.lease_ttl: 100ms must be at least 1s"}},
		{"short redis write interval", "streams:\n  backend: redis\n  redis: {addr: 127.0.0.1:6379}\n  token_secret: 0123456789abcdef0123\n  redis_write_interval: 1ms\n", []string{"streams.redis_write_interval: 1ms must be from 10ms to 10s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := good + tc.yaml
			if tc.yaml == "" {
				y = strings.Replace(good, "    routes:\n", "    last_reader: stay\n    routes:\n", 1)
			}
			_, err := Parse("test.yaml", []byte(y))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	cfg, err := Parse("test.yaml", []byte(good+"streams:\n  backend: redis\n  token_secret: 0123456789abcdef0123\nrate_limit:\n  redis: {addr: 127.0.0.1:6379}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Streams.RedisConfig(cfg.RateLimit); r.Addr != "127.0.0.1:6379" || cfg.Streams.LastReader != "cancel" || cfg.Streams.Retention.Std() != 5*time.Minute {
		t.Errorf("streams defaults: %+v", cfg.Streams)
	}
}

// TestProviderTimeoutDefaults: a silent upstream once held a stream and
// its slot forever, since no timeout was set by default. Unset timeouts
// take defaults fit for reasoning models; 0s turns one off.
func TestProviderTimeoutDefaults(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte("auth: {enabled: false}\nproviders:\n  a: {type: mock}\n  b: {type: mock, first_token_timeout: 0s, idle_timeout: 30s}\nmodels:\n  m: {routes: [{provider: a}, {provider: b}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f, i, s := cfg.Providers["a"].Timeouts(); f != 10*time.Minute || i != 5*time.Minute || s != 30*time.Minute {
		t.Errorf("defaults %v %v %v", f, i, s)
	}
	if f, i, s := cfg.Providers["b"].Timeouts(); f != 0 || i != 30*time.Second || s != 30*time.Minute {
		t.Errorf("set %v %v %v", f, i, s)
	}
}

// TestResolve: a model's own name, then an exact alias, then the longest
// pattern.
func TestResolve(t *testing.T) {
	c := &Config{Models: map[string]Model{
		"claude-sonnet-4-5": {},
		"haiku":             {Aliases: []string{"claude-haiku-*", "claude-3-5-haiku-20241022"}},
		"any":               {Aliases: []string{"claude-*", "claude-sonnet-4-5-exact"}},
	}}
	for name, want := range map[string]string{
		"claude-sonnet-4-5": "claude-sonnet-4-5", "claude-sonnet-4-5-exact": "any", "claude-haiku-4-5-20251001": "haiku",
		"claude-3-5-haiku-20241022": "haiku", "claude-opus-4-1": "any", "gpt-4o": "",
	} {
		if got := c.Resolve(name); got != want {
			t.Errorf("Resolve(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestServesResponses: OpenAI's own API serves the Responses API unless
// said otherwise; any other base URL only when said.
func TestServesResponses(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		p    Provider
		want bool
	}{
		{Provider{Type: TypeOpenAI}, true},
		{Provider{Type: TypeOpenAI, BaseURL: "https://api.openai.com/v1"}, true},
		{Provider{Type: TypeOpenAI, BaseURL: "https://api.openai.com/v1", ResponsesAPI: &no}, false},
		{Provider{Type: TypeOpenAI, BaseURL: "http://127.0.0.1:8000/v1"}, false},
		{Provider{Type: TypeOpenAI, BaseURL: "http://127.0.0.1:8000/v1", ResponsesAPI: &yes}, true},
		{Provider{Type: TypeOpenAI, BaseURL: "https://r.openai.azure.com", Azure: &Azure{}}, false},
	} {
		if got := tc.p.ServesResponses(); got != tc.want {
			t.Errorf("%+v: %v", tc.p, got)
		}
	}
}

func TestTracingValidation(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"bad protocol", "tracing:\n  protocol: http/json\n", `tracing.protocol: "http/json" is not one of http/protobuf, grpc`},
		{"endpoint without scheme", "tracing:\n  endpoint: collector:4318\n", `tracing.endpoint: "collector:4318" must be an http:// or https:// URL with a host`},
		{"ratio above 1", "tracing:\n  sample_ratio: 1.5\n", "tracing.sample_ratio: 1.5 is not between 0 and 1"},
		{"negative ratio", "tracing:\n  sample_ratio: -0.1\n", "tracing.sample_ratio: -0.1 is not between 0 and 1"},
		{"bad header", "tracing:\n  headers:\n    \"a b\": x\n", `tracing.headers: "a b" is not a header name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(good+tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	cfg, err := Parse("test.yaml", []byte(good+"tracing:\n  enabled: true\n  protocol: grpc\n  endpoint: http://otel-collector:4317\n  sample_ratio: 0.25\n  headers:\n    x-token: ${TRACE_TOKEN}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tr := cfg.Tracing; !tr.Enabled || tr.Protocol != TracingGRPC || *tr.SampleRatio != 0.25 || tr.Endpoint != "http://otel-collector:4317" || len(tr.Headers) != 1 {
		t.Errorf("tracing: %+v", tr)
	}
}
