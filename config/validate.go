package config

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/streamgate/gateway/spend"
)

var providerName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks the configuration as a whole and returns every problem,
// each naming the field, the value and what was expected.
func (c *Config) Validate() []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}

	s := &c.Server
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		add("server.listen", "%q is not a host:port address (e.g. 127.0.0.1:8080 or :8080)", s.Listen)
	}
	if s.PprofListen != "" {
		host, _, err := net.SplitHostPort(s.PprofListen)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			add("server.pprof_listen", "%q must be a loopback host:port such as 127.0.0.1:6060: the profiler must not be exposed", s.PprofListen)
		}
	}
	if s.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(s.Metrics.Listen); err != nil {
			add("server.metrics.listen", "%q is not a host:port address (e.g. 10.0.0.5:9090 or :9090)", s.Metrics.Listen)
		} else if s.Metrics.Listen == s.Listen {
			add("server.metrics.listen", "%q is server.listen itself: leave it empty to serve /metrics there", s.Metrics.Listen)
		}
	}
	if s.GCHeapFloorBytes < 0 {
		add("server.gc_heap_floor_bytes", "%d is negative (0 leaves the collector to GOGC)", s.GCHeapFloorBytes)
	}
	if s.MaxBodyBytes <= 0 {
		add("server.max_body_bytes", "%d must be positive", s.MaxBodyBytes)
	} else if s.MaxPendingBodyBytes < s.MaxBodyBytes {
		add("server.max_pending_body_bytes", "%d is less than max_body_bytes (%d): no body could be read", s.MaxPendingBodyBytes, s.MaxBodyBytes)
	}
	if s.BodyTimeout < 0 {
		add("server.body_timeout", "%s must not be negative", s.BodyTimeout)
	}
	for field, d := range map[string]Duration{
		"server.heartbeat_interval":  s.HeartbeatInterval,
		"server.shutdown_timeout":    s.ShutdownTimeout,
		"server.write_timeout":       s.WriteTimeout,
		"server.read_header_timeout": s.ReadHeaderTimeout,
		"server.idle_timeout":        s.IdleTimeout,
	} {
		if d < 0 {
			add(field, "%s must not be negative", d)
		}
	}
	switch s.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("server.log.level", "%q is not one of debug, info, warn, error", s.Log.Level)
	}
	switch s.Log.Format {
	case "text", "json":
	default:
		add("server.log.format", "%q is not one of text, json", s.Log.Format)
	}
	if d := s.Log.FlushInterval; d < 0 || d > Duration(maxLogFlush) {
		add("server.log.flush_interval", "%s is outside 0 to %s", d, maxLogFlush)
	}
	for i, o := range s.CORS.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			add(fmt.Sprintf("server.cors.allowed_origins[%d]", i), "%q is not an origin (want scheme://host[:port], or *)", o)
		}
	}

	if len(c.Providers) == 0 {
		add("providers", "at least one provider is required")
	}
	for _, name := range sortedKeys(c.Providers) {
		ps = append(ps, c.Providers[name].validate("providers."+name, name)...)
	}

	ps = append(ps, c.validateLimits()...)
	ps = append(ps, c.validateStreams()...)
	ps = append(ps, c.Ledger.validate()...)
	ps = append(ps, c.Tracing.validate()...)
	for _, name := range sortedKeys(c.Prices) {
		p := c.Prices[name]
		ps = append(ps, validPrice("prices."+name, &p)...)
	}
	for _, name := range sortedKeys(c.Models) {
		m := c.Models[name]
		ps = append(ps, validPrice("models."+name+".price", m.Price)...)
		for i := range m.Routes {
			ps = append(ps, validPrice(fmt.Sprintf("models.%s.routes[%d].price", name, i), m.Routes[i].Price)...)
		}
	}

	if len(c.Models) == 0 {
		add("models", "at least one model is required")
	}
	aliasOf := map[string]string{}
	for _, name := range sortedKeys(c.Models) {
		m := c.Models[name]
		field := "models." + name
		for i, a := range m.Aliases {
			af := fmt.Sprintf("%s.aliases[%d]", field, i)
			_, isModel := c.Models[a]
			switch {
			case strings.TrimSpace(strings.TrimSuffix(a, "*")) == "":
				add(af, "%q names nothing: write a model name, or a prefix followed by *", a)
			case strings.Contains(strings.TrimSuffix(a, "*"), "*"):
				add(af, "%q has a * before its end: only a trailing * is a pattern", a)
			case isModel:
				add(af, "%q is a model's own name", a)
			case aliasOf[a] != "":
				add(af, "%q is already an alias of model %s", a, aliasOf[a])
			default:
				aliasOf[a] = name
			}
		}
		for _, d := range m.Drop {
			if !slices.Contains(OverridableParams(), d) {
				add(field+".drop", "%q is not one of %s", d, strings.Join(OverridableParams(), ", "))
			}
		}
		if f := m.Force; f.MaxTokens != nil && (*f.MaxTokens < 1 || *f.MaxTokens > 1<<20) {
			add(field+".force.max_tokens", "%d is not between 1 and 1048576", *f.MaxTokens)
		}
		if f := m.Force; f.ReasoningEffort != "" && !slices.Contains([]string{"minimal", "low", "medium", "high"}, f.ReasoningEffort) {
			add(field+".force.reasoning_effort", "%q is not one of minimal, low, medium, high", f.ReasoningEffort)
		}
		if strings.TrimSpace(name) == "" {
			add(field, "model name must not be empty")
		}
		if len(m.Routes) == 0 {
			add(field+".routes", "at least one route is required")
		}
		switch m.Strategy {
		case "", "fallback", "weighted", "least_busy", "fastest":
		default:
			add(field+".strategy", "%q is not one of fallback, weighted, least_busy, fastest", m.Strategy)
		}
		for i, r := range m.Routes {
			rf := fmt.Sprintf("%s.routes[%d]", field, i)
			if r.Weight != nil && *r.Weight < 0 {
				add(rf+".weight", "%d must not be negative", *r.Weight)
			}
			if r.Provider == "" {
				add(rf+".provider", "is required")
			} else if _, ok := c.Providers[r.Provider]; !ok {
				add(rf+".provider", "%q is not a configured provider (have: %s)", r.Provider, strings.Join(sortedKeys(c.Providers), ", "))
			}
		}
	}
	return ps
}

func (p Provider) validate(field, name string) []Problem {
	var ps []Problem
	add := func(f, format string, args ...any) {
		ps = append(ps, Problem{Field: f, Msg: fmt.Sprintf(format, args...)})
	}
	if !providerName.MatchString(name) {
		add(field, "provider name %q may hold only letters, digits, '_' and '-'", name)
	}
	if p.ConnectTimeout < 0 {
		add(field+".connect_timeout", "%s must not be negative", p.ConnectTimeout)
	}
	switch p.Type {
	case "":
		add(field+".type", "is required (openai, anthropic or mock)")
	case TypeAnthropic:
		if p.BaseURL != "" {
			if u, err := url.Parse(string(p.BaseURL)); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add(field+".base_url", "%q is not an http(s) URL", p.BaseURL)
			}
		}
		if p.Azure != nil || p.Mock != nil || p.Organization != "" || p.ResponsesAPI != nil {
			add(field+".type", "an anthropic provider takes no azure, mock, organization or responses_api settings")
		}
		if p.MaxTokens < 0 {
			add(field+".max_tokens", "%d must not be negative", p.MaxTokens)
		}
	case TypeOpenAI:
		if p.BaseURL != "" {
			u, err := url.Parse(string(p.BaseURL))
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add(field+".base_url", "%q is not an http(s) URL", p.BaseURL)
			}
		}
		if p.Azure != nil && p.BaseURL == "" {
			add(field+".base_url", "is required with azure (https://RESOURCE.openai.azure.com)")
		}
		for h := range p.Headers {
			if !validHeaderName(h) {
				add(field+".headers", "%q is not a valid HTTP header name", h)
			}
		}
		if p.Mock != nil {
			add(field+".mock", "mock settings need type: mock")
		}
	case TypeMock:
		if p.BaseURL != "" || p.APIKey != "" || p.Azure != nil || len(p.Headers) > 0 || p.Organization != "" || p.ResponsesAPI != nil {
			add(field+".type", "a mock provider takes only mock settings, not base_url, api_key, organization, headers, azure or responses_api")
		}
		if m := p.Mock; m != nil {
			if m.Tokens != nil && *m.Tokens < 0 {
				add(field+".mock.tokens", "%d must not be negative", *m.Tokens)
			}
			if m.Reasoning < 0 {
				add(field+".mock.reasoning", "%d must not be negative", m.Reasoning)
			}
			if m.TokenDelay < 0 || m.FirstTokenDelay < 0 {
				add(field+".mock", "delays must not be negative")
			}
			if m.FailStatus != 0 && (m.FailStatus < 400 || m.FailStatus > 599) {
				add(field+".mock.fail_status", "%d is not an HTTP error status (400-599)", m.FailStatus)
			}
		}
	default:
		add(field+".type", "%q is not a provider type (want openai, anthropic or mock)", p.Type)
	}
	return ps
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, r := range h {
		if r > 127 || !strings.ContainsRune("!#$%&'*+-.^_`|~", r) && !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return http.CanonicalHeaderKey(h) != ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var keyName = providerName

func (c *Config) validateLimits() []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for i, p := range c.Auth.TrustedProxies {
		if net.ParseIP(p) == nil {
			if _, _, err := net.ParseCIDR(p); err != nil {
				add(fmt.Sprintf("auth.trusted_proxies[%d]", i), "%q is not an IP address or CIDR", p)
			}
		}
	}
	if c.Auth.AuthEnabled() && len(c.Keys) == 0 {
		add("keys", "auth is enabled but no keys are configured: add keys, or set auth.enabled: false for local use")
	}
	digests := map[string]string{}
	for _, name := range sortedKeys(c.Keys) {
		k := c.Keys[name]
		field := "keys." + name
		if !keyName.MatchString(name) {
			add(field, "key name %q may hold only letters, digits, '_' and '-'", name)
		}
		switch {
		case k.Key == "" && k.KeySHA256 == "":
			add(field, "needs key (usually ${ENV_VAR}) or key_sha256")
		case k.Key != "" && k.KeySHA256 != "":
			add(field, "give key or key_sha256, not both")
		case k.KeySHA256 != "" && !validSHA256(k.KeySHA256):
			add(field+".key_sha256", "is not 64 hex digits")
		}
		if d := k.Digest(); d != "" {
			if other, dup := digests[d]; dup {
				add(field, "has the same secret as keys.%s", other)
			}
			digests[d] = name
		}
		for i, m := range k.Models {
			if _, ok := c.Models[m]; !ok {
				add(fmt.Sprintf("%s.models[%d]", field, i), "%q is not a configured model", m)
			}
		}
		ps = append(ps, k.Limits.validate(field+".limits")...)
	}
	ps = append(ps, c.RateLimit.Defaults.validate("rate_limit.defaults")...)
	switch c.RateLimit.Backend {
	case "memory":
	case "redis":
		ps = append(ps, c.RateLimit.Redis.validate("rate_limit.redis")...)
	default:
		add("rate_limit.backend", "%q is not a backend (want memory or redis)", c.RateLimit.Backend)
	}
	if m := c.RateLimit.FailureMode; m != "fail_open" && m != "fail_closed" {
		add("rate_limit.failure_mode", "%q is not one of fail_open, fail_closed", m)
	}
	if c.RateLimit.LeaseTTL.Std() < time.Second {
		add("rate_limit.lease_ttl", "%s must be at least 1s", c.RateLimit.LeaseTTL)
	}
	if c.RateLimit.IdleTTL <= 0 {
		add("rate_limit.idle_ttl", "%s must be positive", c.RateLimit.IdleTTL)
	}
	if c.RateLimit.MaxClients <= 0 {
		add("rate_limit.max_clients", "%d must be positive", c.RateLimit.MaxClients)
	}
	if c.Health.FailureThreshold < 1 || c.Health.Cooldown <= 0 {
		add("health", "failure_threshold must be at least 1 and cooldown positive")
	}
	if c.Retry.AttemptsPerRoute < 1 || c.Retry.MaxAttempts < 1 {
		add("retry", "attempts_per_route and max_attempts must be at least 1")
	}
	if c.Retry.MaxTime <= 0 || c.Retry.Backoff < 0 {
		add("retry", "max_time must be positive and backoff not negative")
	}
	for _, name := range sortedKeys(c.Providers) {
		p := c.Providers[name]
		if first, idle, stream := p.Timeouts(); first < 0 || idle < 0 || stream < 0 {
			add("providers."+name, "timeouts must not be negative")
		}
		if p.RequestsPerSecond < 0 {
			add("providers."+name+".requests_per_second", "%g must not be negative", p.RequestsPerSecond)
		}
		if p.QueueTimeout < 0 {
			add("providers."+name+".queue_timeout", "%s must not be negative", p.QueueTimeout)
		}
	}
	return ps
}

func (r Redis) validate(field string) []Problem {
	var ps []Problem
	if _, _, err := net.SplitHostPort(string(r.Addr)); err != nil {
		ps = append(ps, Problem{Field: field + ".addr", Msg: fmt.Sprintf("%q is not a host:port address (required with backend redis)", r.Addr)})
	}
	if f := r.TLSCAFile; f != "" {
		if _, err := loadCertPool(f); err != nil {
			ps = append(ps, Problem{Field: field + ".tls_ca_file", Msg: err.Error()})
		}
		if !r.TLS {
			ps = append(ps, Problem{Field: field + ".tls_ca_file", Msg: "is set but " + field + ".tls is false"})
		}
	}
	return ps
}

func (c *Config) validateStreams() []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	switch r := c.Responses; {
	case r.Backend != "memory" && r.Backend != "redis":
		add("responses.backend", "%q is not a backend (want memory or redis)", r.Backend)
	case r.Backend == "redis" && c.Streams.Backend != "redis":
		add("responses.backend", "redis needs streams.backend: redis too (background responses are resumed from the streams' Redis on any replica)")
	}
	if c.Responses.Retention <= 0 {
		add("responses.retention", "%s must be positive", c.Responses.Retention)
	}
	if c.Responses.MaxBytes < 1<<20 {
		add("responses.max_bytes", "%d must be at least 1048576", c.Responses.MaxBytes)
	}
	st := &c.Streams
	switch st.Backend {
	case "memory":
	case "redis":
		field := "streams.redis"
		if st.Redis == nil {
			field = "rate_limit.redis"
		}
		ps = append(ps, st.RedisConfig(c.RateLimit).validate(field)...)
		if len(st.TokenSecret) < 16 {
			add("streams.token_secret", "must be set, at least 16 characters, with backend redis: every replica must verify the others' events URLs")
		}
		if st.LeaseTTL.Std() < time.Second {
			add("streams.lease_ttl", "%s must be at least 1s", st.LeaseTTL)
		}
		if d := st.RedisWriteInterval.Std(); d < 10*time.Millisecond || d > 10*time.Second {
			add("streams.redis_write_interval", "%s must be from 10ms to 10s", st.RedisWriteInterval)
		}
	default:
		add("streams.backend", "%q is not a backend (want memory or redis)", st.Backend)
	}
	if st.TokenSecret != "" && len(st.TokenSecret) < 16 {
		add("streams.token_secret", "is shorter than 16 characters: use a long random value")
	}
	for field, d := range map[string]Duration{"streams.token_ttl": st.TokenTTL, "streams.retention": st.Retention, "streams.reconnect_delay": st.ReconnectDelay} {
		if d <= 0 {
			add(field, "%s must be positive", d)
		}
	}
	if st.MaxReaders < 1 {
		add("streams.max_readers", "%d must be at least 1 (the connection that starts a stream is its first reader)", st.MaxReaders)
	}
	if st.MaxStreamBytes <= 0 || st.MaxStreamEvents <= 0 || st.MaxTotalBytes <= 0 {
		add("streams", "max_stream_bytes, max_stream_events and max_total_bytes must be positive")
	} else if st.MaxTotalBytes < st.MaxStreamBytes {
		add("streams.max_total_bytes", "%d is less than max_stream_bytes (%d)", st.MaxTotalBytes, st.MaxStreamBytes)
	}
	ps = append(ps, LastReaderPolicy{LastReader: st.LastReader, LastReaderGrace: &st.LastReaderGrace}.validate("streams")...)
	for _, name := range sortedKeys(c.Models) {
		ps = append(ps, c.Models[name].LastReaderPolicy.validate("models."+name)...)
	}
	for _, name := range sortedKeys(c.Keys) {
		ps = append(ps, c.Keys[name].LastReaderPolicy.validate("keys."+name)...)
	}
	return ps
}

func (p LastReaderPolicy) validate(field string) []Problem {
	var ps []Problem
	switch p.LastReader {
	case "", LastReaderCancel, LastReaderContinue, LastReaderDrain:
	default:
		ps = append(ps, Problem{Field: field + ".last_reader", Msg: fmt.Sprintf("%q is not one of cancel, continue, drain", p.LastReader)})
	}
	if p.LastReaderGrace != nil && *p.LastReaderGrace <= 0 {
		ps = append(ps, Problem{Field: field + ".last_reader_grace", Msg: fmt.Sprintf("%s must be positive", *p.LastReaderGrace)})
	}
	return ps
}

// Problems are what is wrong with limits given at field (for limits
// that come from elsewhere than the file: the admin API).
func (l Limits) Problems(field string) []Problem { return l.validate(field) }

func (l Limits) validate(field string) []Problem {
	var ps []Problem
	for name, v := range map[string]*int{
		"requests_per_minute": l.RequestsPerMinute, "burst": l.Burst, "concurrent_streams": l.ConcurrentStreams,
		"tokens_per_minute": l.TokensPerMinute, "default_max_tokens": l.DefaultMaxTokens,
	} {
		if v != nil && *v < 1 {
			ps = append(ps, Problem{Field: field + "." + name, Msg: fmt.Sprintf("%d must be at least 1 (leave it out for no limit)", *v)})
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Field < ps[j].Field })
	if l.Budget != nil {
		ps = append(ps, l.Budget.validate(field+".budget")...)
	}
	return ps
}

// maxBudgetDollars and maxBudgetTokens bound a budget's amounts: the
// stores count in billionths of a dollar within 2^53.
const (
	maxBudgetDollars = 1e6
	maxBudgetTokens  = 1 << 50
)

func (b Budget) validate(field string) []Problem {
	var ps []Problem
	add := func(f, format string, args ...any) {
		ps = append(ps, Problem{Field: field + f, Msg: fmt.Sprintf(format, args...)})
	}
	switch b.Period {
	case "", "day", "month", "total":
	default:
		add(".period", "%q is not one of day, month, total", b.Period)
	}
	for name, v := range map[string]float64{"dollars": b.Dollars, "soft_dollars": b.SoftDollars} {
		if !(v >= 0 && v <= maxBudgetDollars) {
			add("."+name, "%g must be between 0 and %g", v, float64(maxBudgetDollars))
		}
	}
	for name, v := range map[string]int64{"tokens": b.Tokens, "soft_tokens": b.SoftTokens} {
		if v < 0 || v > maxBudgetTokens {
			add("."+name, "%d must be between 0 and %d", v, int64(maxBudgetTokens))
		}
	}
	if b.Dollars == 0 && b.Tokens == 0 && b.SoftDollars == 0 && b.SoftTokens == 0 {
		add("", "sets no amount: give dollars, tokens, soft_dollars or soft_tokens")
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Field < ps[j].Field })
	return ps
}

func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// loadCertPool reads a PEM bundle of CA certificates.
func loadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// CertPool returns the CAs of tls_ca_file, or nil for the system's roots.
func (r Redis) CertPool() (*x509.CertPool, error) {
	if r.TLSCAFile == "" {
		return nil, nil
	}
	return loadCertPool(r.TLSCAFile)
}

// maxPrice bounds a price per million tokens: past it, a price is a
// typo (per token instead of per million, or a missing decimal point).
const maxPrice = 10000

// maxLogFlush bounds how long a log line may wait: an operator watching
// the log should not wait longer to see a request.
const maxLogFlush = 10 * time.Second

// validPrice checks a price, if one is set: every figure a number of
// dollars per million tokens, from 0 to maxPrice.
func validPrice(field string, p *spend.Price) []Problem {
	if p == nil {
		return nil
	}
	var ps []Problem
	for _, f := range []struct {
		name string
		v    *float64
	}{{"input", &p.Input}, {"cached_input", p.CachedInput}, {"cache_write", p.CacheWrite}, {"output", &p.Output}, {"reasoning", p.Reasoning}} {
		if f.v != nil && (*f.v < 0 || *f.v > maxPrice || *f.v != *f.v) {
			ps = append(ps, Problem{Field: field + "." + f.name, Msg: fmt.Sprintf("%v is not a price in dollars per million tokens (0 to %d)", *f.v, maxPrice)})
		}
	}
	return ps
}

// maxLedgerBatch keeps one batch's insert within PostgreSQL's 65535
// parameters.
const maxLedgerBatch = 2000

func (l Ledger) validate() []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: "ledger." + field, Msg: fmt.Sprintf(format, args...)})
	}
	switch l.Backend {
	case LedgerNone:
	case LedgerSQLite:
		if l.Path == "" {
			add("path", "is required with backend sqlite (a file, e.g. gateway-usage.db)")
		}
	case LedgerPostgres:
		if l.DSN == "" {
			add("dsn", "is required with backend postgres (postgres://user:password@host:5432/db, usually ${DATABASE_URL})")
		}
	default:
		add("backend", "%q is not one of none, sqlite, postgres", l.Backend)
	}
	if l.FlushInterval <= 0 {
		add("flush_interval", "%s must be positive", l.FlushInterval)
	}
	if l.BatchSize < 1 || l.BatchSize > maxLedgerBatch {
		add("batch_size", "%d is not between 1 and %d", l.BatchSize, maxLedgerBatch)
	}
	if l.QueueSize < l.BatchSize {
		add("queue_size", "%d is less than batch_size (%d)", l.QueueSize, l.BatchSize)
	}
	return ps
}

func (t Tracing) validate() []Problem {
	var ps []Problem
	add := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: "tracing." + field, Msg: fmt.Sprintf(format, args...)})
	}
	switch t.Protocol {
	case "", TracingHTTP, TracingGRPC:
	default:
		add("protocol", "%q is not one of %s, %s", t.Protocol, TracingHTTP, TracingGRPC)
	}
	if t.Endpoint != "" {
		u, err := url.Parse(string(t.Endpoint))
		switch {
		case err != nil:
			add("endpoint", "is not a URL: %v", err)
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			add("endpoint", "%q must be an http:// or https:// URL with a host, e.g. http://otel-collector:4318", t.Endpoint)
		}
	}
	if r := t.SampleRatio; r != nil && (*r < 0 || *r > 1 || *r != *r) {
		add("sample_ratio", "%v is not between 0 and 1", *r)
	}
	for name := range t.Headers {
		if name == "" || strings.ContainsAny(name, " :\r\n") {
			add("headers", "%q is not a header name", name)
		}
	}
	return ps
}
