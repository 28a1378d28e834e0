// Package config reads and checks the gateway's config.yaml: one typed
// struct, filled from defaults, then from the file (strictly: unknown keys
// are errors), with ${VAR} expansion in the fields that opt into it, then
// validated as a whole so that every problem is reported at once, each with
// its field, value and line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/streamgate/gateway/spend"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration.
type Config struct {
	Server Server `yaml:"server"`
	// Providers are the upstreams, by a name of the operator's choice.
	Providers map[string]Provider `yaml:"providers"`
	// Models are the public model names clients ask for.
	Models map[string]Model `yaml:"models"`
	// Auth says who may call the gateway.
	Auth Auth `yaml:"auth"`
	// Keys are the gateway's own API keys, by name.
	Keys map[string]Key `yaml:"keys"`
	// RateLimit holds the default limits and where limiter state lives.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Retry says how failures before the first delta are retried.
	Retry Retry `yaml:"retry"`
	// Health says when a failing deployment is set aside.
	Health Health `yaml:"health"`
	// Streams configures resumable streams.
	Streams Streams `yaml:"streams"`
	// Responses configures the store of the Responses API.
	Responses Responses `yaml:"responses"`
	// Ledger is where every request's usage and cost is recorded.
	Ledger Ledger `yaml:"ledger"`
	// Tracing exports OpenTelemetry traces of requests.
	Tracing Tracing `yaml:"tracing"`
	// Prices are what upstream models cost, by upstream model name,
	// over the bundled table (spend.Bundled); a model's or a route's
	// price overrides both.
	Prices map[string]spend.Price `yaml:"prices"`
}

// Responses configures where POST /v1/responses keeps what clients ask
// it to store (store: true, background: true), for GET
// /v1/responses/{id} and previous_response_id.
type Responses struct {
	// Backend is memory (default: this replica's) or redis (every
	// replica sharing it; the streams' Redis, which background
	// responses need too).
	Backend string `yaml:"backend"`
	// Retention is how long a response is kept (default 720h, 30 days,
	// as OpenAI keeps them).
	Retention Duration `yaml:"retention"`
	// MaxBytes bounds the memory backend: past it, the oldest responses
	// are forgotten (default 64 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
}

// Ledger backends.
const (
	LedgerNone     = "none"
	LedgerSQLite   = "sqlite"
	LedgerPostgres = "postgres"
)

// Ledger configures the usage ledger: one row per request that reached
// routing, written in batches off the request path.
type Ledger struct {
	// Backend is none (default), sqlite (a file, for one replica, no
	// setup) or postgres (for several replicas).
	Backend string `yaml:"backend"`
	// Path is the SQLite file; a relative path is beside the config
	// file.
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string
	// (postgres://user:pass@host/db), usually "${DATABASE_URL}".
	DSN Secret `yaml:"dsn"`
	// FlushInterval is the longest a row waits to be written (default
	// 1s): what a crash can lose.
	FlushInterval Duration `yaml:"flush_interval"`
	// BatchSize is the most rows written at once (default 500).
	BatchSize int `yaml:"batch_size"`
	// QueueSize bounds the rows waiting to be written, while the
	// database is slow or down (default 65536): past it rows are
	// dropped and counted (gateway_ledger_dropped_total); no request
	// ever waits for the ledger.
	QueueSize int `yaml:"queue_size"`
}

// OTLP protocols of the trace exporter.
const (
	TracingHTTP = "http/protobuf"
	TracingGRPC = "grpc"
)

// Tracing configures OpenTelemetry traces: a span per request, with
// children for admission, each upstream attempt and the relay, exported
// over OTLP. Off unless enabled. Settings left empty fall back to the
// standard OTEL_* environment variables (OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_HEADERS,
// OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES...),
// then to OpenTelemetry's defaults. OTEL_SDK_DISABLED=true turns tracing
// off whatever the file says.
type Tracing struct {
	Enabled bool `yaml:"enabled"`
	// Protocol is http/protobuf (port 4318) or grpc (port 4317).
	Protocol string `yaml:"protocol"`
	// Endpoint is the collector's base URL, e.g. http://otel-collector:4318
	// (http/protobuf posts to its /v1/traces unless it has a path of its
	// own); http:// means no TLS.
	Endpoint EnvString `yaml:"endpoint"`
	// Headers go with every export (a collector's or vendor's token);
	// values expand ${VAR} and are treated as secrets.
	Headers map[string]Secret `yaml:"headers"`
	// SampleRatio is the share of new traces recorded, 0 to 1; a request
	// that arrives with a traceparent follows its caller's decision.
	// Unset: OTEL_TRACES_SAMPLER decides, by default every trace.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName names the gateway in traces (default OTEL_SERVICE_NAME,
	// else streamgate).
	ServiceName string `yaml:"service_name"`
	// CaptureContent puts prompts (and, for answers that were not
	// streamed, completions) in spans. Off by default: they may hold
	// anything a user typed.
	CaptureContent bool `yaml:"capture_content"`
}

// Last-reader policies: what a stream does when its last reader leaves.
const (
	LastReaderCancel   = "cancel"
	LastReaderContinue = "continue"
	LastReaderDrain    = "drain"
)

// Streams configures resumable streams: every native stream is kept as a
// log of its events, which clients can resume from any event.
type Streams struct {
	// Backend is memory (default: a stream can be resumed on the replica
	// that runs it) or redis (on any replica sharing the Redis).
	Backend string `yaml:"backend"`
	// Redis is where streams are kept with backend redis; by default the
	// rate limiter's (rate_limit.redis).
	Redis *Redis `yaml:"redis"`
	// TokenSecret signs the tokens that grant access to an events URL
	// (HMAC-SHA256). Every replica must share it, so it is required with
	// backend redis; otherwise a random one is drawn at start-up (tokens
	// then die with the process).
	TokenSecret Secret `yaml:"token_secret"`
	// TokenTTL is how long an events URL's token is valid (default 15m).
	TokenTTL Duration `yaml:"token_ttl"`
	// Retention is how long a finished stream stays replayable
	// (default 5m).
	Retention Duration `yaml:"retention"`
	// LastReader is the default policy when a stream's last reader
	// leaves: cancel (the upstream at once; default), continue (for
	// LastReaderGrace, then cancel if nobody came back) or drain (finish,
	// to account usage exactly). Models and keys may override it.
	LastReader string `yaml:"last_reader"`
	// LastReaderGrace is how long continue waits for a reader; also how
	// long a stream started with POST /v1/streams waits for its first
	// (default 30s).
	LastReaderGrace Duration `yaml:"last_reader_grace"`
	// MaxStreamBytes and MaxStreamEvents bound one stream's log: past
	// either, its oldest events are dropped, and resuming from before
	// them fails (defaults 1 MiB, 20000).
	MaxStreamBytes  int64 `yaml:"max_stream_bytes"`
	MaxStreamEvents int   `yaml:"max_stream_events"`
	// MaxTotalBytes bounds every log in memory together: past it,
	// finished streams are forgotten oldest first (default 256 MiB).
	MaxTotalBytes int64 `yaml:"max_total_bytes"`
	// MaxReaders bounds the readers attached to one stream at once, the
	// connection that started it included (default 4); past it, GET
	// /v1/streams/{id} answers 429. Each reader also counts against its
	// key's (or address's) concurrent streams and request rate.
	MaxReaders int `yaml:"max_readers"`
	// LeaseTTL is how soon, with backend redis, readers on other replicas
	// learn that the replica producing a stream died (default 5s).
	LeaseTTL Duration `yaml:"lease_ttl"`
	// ReconnectDelay is the retry: an events URL sends, the wait of a
	// browser's EventSource before it reconnects (default 1s).
	ReconnectDelay Duration `yaml:"reconnect_delay"`
	// RedisWriteInterval is, with backend redis, the least time between
	// two writes of a stream's new events to Redis (default 50ms): about
	// how far readers on other replicas trail the producing one, and what
	// sizes Redis, a streaming stream costing at most one write per
	// interval.
	RedisWriteInterval Duration `yaml:"redis_write_interval"`
}

// RedisConfig returns the Redis that streams are kept in.
func (s Streams) RedisConfig(rl RateLimit) Redis {
	if s.Redis != nil {
		return *s.Redis
	}
	return rl.Redis
}

// LastReaderPolicy is a last-reader policy, set per model or per key.
type LastReaderPolicy struct {
	// LastReader overrides streams.last_reader.
	LastReader string `yaml:"last_reader"`
	// LastReaderGrace overrides streams.last_reader_grace.
	LastReaderGrace *Duration `yaml:"last_reader_grace"`
}

// Health configures the cooldown of failing deployments.
type Health struct {
	// FailureThreshold consecutive upstream failures put a deployment on
	// cooldown (default 3).
	FailureThreshold int `yaml:"failure_threshold"`
	// Cooldown is how long it is then skipped while healthy routes exist
	// (default 30s). After it, one request probes it: a success restores
	// it, a failure starts a new cooldown.
	Cooldown Duration `yaml:"cooldown"`
}

// Retry governs retries and fallbacks. They happen only before the first
// delta reached the client; after it, a failure ends the stream with an
// error event.
type Retry struct {
	// AttemptsPerRoute is how often one deployment is tried before
	// falling back to the next route (default 2).
	AttemptsPerRoute int `yaml:"attempts_per_route"`
	// MaxAttempts caps the attempts of one request in all (default 4).
	MaxAttempts int `yaml:"max_attempts"`
	// MaxTime caps the time spent before the first delta, waits
	// included (default 30s).
	MaxTime Duration `yaml:"max_time"`
	// Backoff is the first pause between attempts of one deployment; it
	// doubles each time, with full jitter, up to 5s, and an upstream's
	// Retry-After is honoured when it fits in MaxTime (default 250ms).
	Backoff Duration `yaml:"backoff"`
}

// Auth configures client authentication.
type Auth struct {
	// Enabled requires a key from keys on every /v1 request (default
	// true). With it off, limits apply per client IP: for local
	// development, on a loopback address.
	Enabled *bool `yaml:"enabled"`
	// TrustedProxies lists the addresses (IPs or CIDRs) whose
	// X-Forwarded-For header is believed when finding a client's IP; by
	// default none, so the connection's address is used.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// PlaygroundEnabled reports whether / serves the playground.
func (s Server) PlaygroundEnabled() bool { return s.Playground == nil || *s.Playground }

// AuthEnabled reports whether keys are required.
func (a Auth) AuthEnabled() bool { return a.Enabled == nil || *a.Enabled }

// Key is one gateway API key.
type Key struct {
	// Key is the secret itself, usually "${SOME_ENV_VAR}"; or give
	// KeySHA256 instead, so the file holds no secret.
	Key Secret `yaml:"key"`
	// KeySHA256 is the hex SHA-256 of the secret.
	KeySHA256 string `yaml:"key_sha256"`
	// Models the key may use; empty means all.
	Models []string `yaml:"models"`
	// Limits override rate_limit.defaults field by field.
	Limits Limits `yaml:"limits"`
	// Admin lets the key use the /admin endpoints (default false: they
	// show every model, provider and upstream name).
	Admin bool `yaml:"admin"`
	// The key's last-reader policy overrides its model's.
	LastReaderPolicy `yaml:",inline"`
}

// Limits are per-client limits; an absent field is unlimited (or inherits
// the default, for a key).
type Limits struct {
	// RequestsPerMinute is the sustained request rate of a token bucket.
	RequestsPerMinute *int `yaml:"requests_per_minute" json:"requests_per_minute,omitempty"`
	// Burst is how many requests may come at once (default: a sixth of
	// requests_per_minute, at least 1).
	Burst *int `yaml:"burst" json:"burst,omitempty"`
	// ConcurrentStreams caps requests in flight.
	ConcurrentStreams *int `yaml:"concurrent_streams" json:"concurrent_streams,omitempty"`
	// TokensPerMinute caps prompt plus completion tokens. A request
	// reserves its estimated prompt tokens plus max_tokens (or
	// default_max_tokens) at admission; the reservation is settled with
	// the real usage when it ends.
	TokensPerMinute *int `yaml:"tokens_per_minute" json:"tokens_per_minute,omitempty"`
	// DefaultMaxTokens is reserved for requests without max_tokens
	// (default 1024).
	DefaultMaxTokens *int `yaml:"default_max_tokens" json:"default_max_tokens,omitempty"`
	// Budget caps what a key spends; a key's replaces the default's
	// whole. Budgets apply to keys only (not to clients by address).
	Budget *Budget `yaml:"budget" json:"budget,omitempty"`
}

// Budget is a key's spending cap over a period, counted like
// tokens_per_minute: a request reserves its prompt and max_tokens at the
// highest price of its model's routes, and settles with its real cost
// when it ends. A request that would go over a hard amount is refused
// 429 (budget_exceeded) until the period resets; a soft amount only
// warns (a log line and gateway_budget_soft_limit_crossed_total) when
// spend crosses it. A zero amount is no cap.
type Budget struct {
	// Period is day, month (the default) or total; days and months are
	// UTC.
	Period string `yaml:"period" json:"period,omitempty"`
	// Dollars and Tokens (prompt plus completion) are hard caps.
	Dollars float64 `yaml:"dollars" json:"dollars,omitempty"`
	Tokens  int64   `yaml:"tokens" json:"tokens,omitempty"`
	// SoftDollars and SoftTokens only warn.
	SoftDollars float64 `yaml:"soft_dollars" json:"soft_dollars,omitempty"`
	SoftTokens  int64   `yaml:"soft_tokens" json:"soft_tokens,omitempty"`
}

// RateLimit configures limiting.
type RateLimit struct {
	// Backend is memory (default; per replica) or redis (shared by every
	// replica pointing at the same Redis).
	Backend string `yaml:"backend"`
	Redis   Redis  `yaml:"redis"`
	// FailureMode says what happens while Redis is unreachable: fail_open
	// (default) admits requests without limits, fail_closed refuses them
	// with 503.
	FailureMode string `yaml:"failure_mode"`
	// LeaseTTL is how long a stream slot outlives the replica holding it
	// if that replica dies (default 30s); live replicas renew theirs.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// Defaults apply to every key, and to every client IP when auth is
	// off.
	Defaults Limits `yaml:"defaults"`
	// IdleTTL is how long limiter state of a client that sends nothing is
	// kept (default 10m); MaxClients bounds how many clients are tracked
	// at once (default 100000).
	IdleTTL    Duration `yaml:"idle_ttl"`
	MaxClients int      `yaml:"max_clients"`
}

// Redis is a Redis server's address and credentials.
type Redis struct {
	// Addr is host:port.
	Addr     EnvString `yaml:"addr"`
	Username EnvString `yaml:"username"`
	Password Secret    `yaml:"password"`
	DB       int       `yaml:"db"`
	// TLS connects with TLS, verifying the server's certificate against
	// the system's roots, or against TLSCAFile when set.
	TLS       bool   `yaml:"tls"`
	TLSCAFile string `yaml:"tls_ca_file"`
}

// Server holds the HTTP server settings.
type Server struct {
	// Listen is the address to serve on (default 127.0.0.1:8080).
	Listen string `yaml:"listen"`
	// MaxBodyBytes caps request bodies; larger ones get 413
	// (default 1048576, 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// BodyTimeout bounds reading a request's body once its headers are
	// in; a slower client gets 408 (default 30s; 0s: no limit).
	BodyTimeout Duration `yaml:"body_timeout"`
	// MaxPendingBodyBytes bounds the memory of all request bodies being
	// read at once (a body of unknown length counts max_body_bytes);
	// past it, 503 server_busy (default 64 MiB). Restart to change.
	MaxPendingBodyBytes int64 `yaml:"max_pending_body_bytes"`
	// GCHeapFloorBytes is memory set aside so that a small heap is not
	// garbage-collected over and over: the collector's heap goal never
	// falls below it, GOGC's own goal applying above (package
	// internal/gcfloor). Under load it saves about a tenth of the CPU per
	// stream, for at most this much more resident memory, and none once
	// the live heap is half of it; 0 leaves the collector to GOGC
	// (default 64 MiB). Read at start; restart to change.
	GCHeapFloorBytes int64 `yaml:"gc_heap_floor_bytes"`
	// HeartbeatInterval is how long a stream may be silent before a
	// ": ping" comment is sent; 0s turns heartbeats off (default 15s).
	HeartbeatInterval Duration `yaml:"heartbeat_interval"`
	// ShutdownTimeout is how long streams in flight may take to finish
	// after SIGTERM before they are ended with a server_shutdown error
	// (default 30s).
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// WriteTimeout is how long one write to a streaming client may block
	// before the client is taken as gone and its upstream cancelled; 0s
	// means no limit (default 30s).
	WriteTimeout Duration `yaml:"write_timeout"`
	// ReadHeaderTimeout bounds reading a request's headers (default 10s).
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes keep-alive connections idle this long
	// (default 120s).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// H2C also accepts cleartext HTTP/2 (prior knowledge), for load
	// balancers and proxies that speak it to their backends; one
	// connection then carries many streams (default false).
	H2C  bool `yaml:"h2c"`
	CORS CORS `yaml:"cors"`
	// PprofListen, when set, serves Go's profiler (/debug/pprof/) on this
	// separate address, which must be a loopback one (default: off).
	PprofListen string `yaml:"pprof_listen"`
	// Metrics says where GET /metrics is served, and to whom.
	Metrics Metrics `yaml:"metrics"`
	// Playground serves the browser playground at / (default true). It
	// is static; its calls carry the key typed into it.
	Playground *bool `yaml:"playground"`
	Log        Log   `yaml:"log"`
}

// Metrics keeps /metrics private: its labels name keys, models and
// providers.
type Metrics struct {
	// Listen, when set, serves /metrics on this separate address only
	// (e.g. an interface only the scraper reaches); the main listener
	// then answers 404 for it (default: the main listener).
	Listen string `yaml:"listen"`
	// Token, when set, is required as "Authorization: Bearer TOKEN"
	// (Prometheus: authorization.credentials), usually "${VAR}".
	Token Secret `yaml:"token"`
}

// CORS configures cross-origin access for browser frontends.
type CORS struct {
	// AllowedOrigins lists origins such as https://chat.example.com, or
	// "*" for any; empty (the default) allows none.
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error (default info).
	Level string `yaml:"level"`
	// Format is text or json (default text).
	Format string `yaml:"format"`
	// FlushInterval is how long log lines may wait to be written together
	// (default 100ms, at most 10s; 0 writes each line at once). Warnings
	// and errors are written at once, with what waited before them.
	FlushInterval Duration `yaml:"flush_interval"`
}

// Provider types.
const (
	TypeOpenAI    = "openai"
	TypeAnthropic = "anthropic"
	TypeMock      = "mock"
)

// Provider is one upstream.
type Provider struct {
	// Type is openai (any OpenAI-compatible server), anthropic (the
	// Messages API) or mock.
	Type string `yaml:"type"`
	// BaseURL is the API root for openai (default https://api.openai.com/v1).
	BaseURL EnvString `yaml:"base_url"`
	// APIKey is the upstream credential, usually "${SOME_ENV_VAR}".
	APIKey       Secret    `yaml:"api_key"`
	Organization EnvString `yaml:"organization"`
	// Headers are sent with every upstream request; values expand ${VAR}
	// and are treated as secrets.
	Headers map[string]Secret `yaml:"headers"`
	// Azure switches the openai provider to Azure OpenAI.
	Azure *Azure `yaml:"azure"`
	// ResponsesAPI says an openai provider's upstream serves OpenAI's
	// Responses API (POST {base_url}/responses: OpenAI, Azure's v1 API,
	// vLLM, OpenRouter): requests to /v1/responses then go to it as the
	// client sent them, hosted tools and all, instead of being
	// translated into chat completions. Default: true for OpenAI's own
	// API, false for any other base_url.
	ResponsesAPI *bool `yaml:"responses_api"`
	// ConnectTimeout bounds dialling and TLS (default 10s).
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// MaxTokens is sent to an anthropic provider when a request gives
	// none, since the Messages API requires it (default 4096).
	MaxTokens int `yaml:"max_tokens"`
	// Mock configures a mock provider.
	Mock *Mock `yaml:"mock"`
	// FirstTokenTimeout bounds the wait from the request to the first
	// delta; it is retried like an upstream failure (default 10m, for
	// reasoning models that think for minutes; 0 disables).
	FirstTokenTimeout *Duration `yaml:"first_token_timeout"`
	// IdleTimeout bounds the gap between two deltas (default 5m; 0
	// disables).
	IdleTimeout *Duration `yaml:"idle_timeout"`
	// StreamTimeout bounds a whole stream (default 30m; 0 disables).
	StreamTimeout *Duration `yaml:"stream_timeout"`
	// RequestsPerSecond paces requests to this provider, shared by all
	// clients: a request waits its turn for up to QueueTimeout
	// (default 5s), then gets 429. 0 means no pacing (default).
	RequestsPerSecond float64  `yaml:"requests_per_second"`
	QueueTimeout      Duration `yaml:"queue_timeout"`
}

// ServesResponses reports whether an openai provider's upstream serves
// the Responses API (ResponsesAPI, or its default).
func (p *Provider) ServesResponses() bool {
	if p.ResponsesAPI != nil {
		return *p.ResponsesAPI
	}
	return p.Azure == nil && (p.BaseURL == "" || strings.HasPrefix(string(p.BaseURL), "https://api.openai.com/"))
}

// Azure holds Azure OpenAI settings.
type Azure struct {
	// APIVersion is the api-version query parameter (default go-openai's).
	APIVersion string `yaml:"api_version"`
	// Deployments maps upstream model names to deployment names.
	Deployments map[string]string `yaml:"deployments"`
}

// Default timeouts of a provider. They suit reasoning models, which may
// think for minutes before their first token, and still free a stream's
// slot (and its client) from an upstream that went silent for good.
const (
	DefaultFirstTokenTimeout = 10 * time.Minute
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultStreamTimeout     = 30 * time.Minute
)

// Timeouts returns the provider's first-token, idle and whole-stream
// timeouts, defaults filled in; 0 is none.
func (p Provider) Timeouts() (firstToken, idle, stream time.Duration) {
	get := func(d *Duration, def time.Duration) time.Duration {
		if d == nil {
			return def
		}
		return d.Std()
	}
	return get(p.FirstTokenTimeout, DefaultFirstTokenTimeout), get(p.IdleTimeout, DefaultIdleTimeout), get(p.StreamTimeout, DefaultStreamTimeout)
}

// Mock configures the built-in mock provider. With Directives on,
// requests may override each field with a "[mock key=value ...]"
// directive in the prompt.
type Mock struct {
	// Directives lets requests change what the mock does with "[mock
	// ...]" in the prompt, within bounds (tokens up to 100000, delays up
	// to 10s, first delay up to 1m, statuses 400-599). Default false: any
	// client could otherwise make the mock stall or stream without end.
	Directives bool `yaml:"directives"`
	// Tokens is the reply length in tokens (default 16).
	Tokens *int `yaml:"tokens"`
	// TokenDelay is the pause between tokens (default 0s).
	TokenDelay Duration `yaml:"token_delay"`
	// FirstTokenDelay is the pause before the first token (default 0s).
	FirstTokenDelay Duration `yaml:"first_token_delay"`
	// FailStatus fails every call with this HTTP status before streaming.
	FailStatus int `yaml:"fail_status"`
	// FailAfter fails streams after this many tokens.
	FailAfter *int `yaml:"fail_after"`
	// StallAfter makes streams go silent after this many tokens.
	StallAfter *int `yaml:"stall_after"`
	// MalformedAfter sends an undecodable chunk after this many tokens.
	MalformedAfter *int `yaml:"malformed_after"`
	// Reply is the text streamed, one word per token.
	Reply string `yaml:"reply"`
	// Reasoning is how many tokens of thinking stream before the reply
	// (default 0), as from a reasoning model.
	Reasoning int `yaml:"reasoning"`
}

// Model is a public model name.
type Model struct {
	// Description is shown nowhere but the config; it helps operators.
	Description string `yaml:"description"`
	// Strategy orders the routes for each request: fallback (in order,
	// the default), weighted (random by weight), least_busy (fewest
	// streams in flight first) or fastest (lowest recent time to first
	// token first). Failed attempts move on to the next route in that
	// order.
	Strategy string `yaml:"strategy"`
	// Routes are the deployments serving this model.
	Routes []Route `yaml:"routes"`
	// Aliases are other names clients may ask for this model by: the
	// dated names a client sends of its own accord, such as Claude
	// Code's claude-sonnet-4-5-20250929. An alias ending in * stands for
	// every name that begins with the rest (claude-haiku-*). A model's
	// own name wins over an alias, an exact alias over a pattern, and a
	// longer pattern over a shorter one.
	Aliases []string `yaml:"aliases"`
	// Drop names request parameters removed before the request goes
	// upstream, for models that refuse them (a reasoning model that
	// takes no temperature): one of OverridableParams.
	Drop []string `yaml:"drop"`
	// Force sets request parameters whatever the client sent: one of
	// OverridableParams each, with a value of its type.
	Force Force `yaml:"force"`
	// The model's last-reader policy overrides streams.last_reader.
	LastReaderPolicy `yaml:",inline"`
	// Price is what the model costs on every route that gives none.
	Price *spend.Price `yaml:"price"`
}

// OverridableParams are the request parameters a model may drop or
// force.
func OverridableParams() []string {
	return []string{"temperature", "top_p", "max_tokens", "reasoning_effort", "seed", "frequency_penalty", "presence_penalty", "stop", "user"}
}

// Force is the parameters a model forces.
type Force struct {
	Temperature      *float32 `yaml:"temperature"`
	TopP             *float32 `yaml:"top_p"`
	MaxTokens        *int     `yaml:"max_tokens"`
	ReasoningEffort  string   `yaml:"reasoning_effort"`
	Seed             *int     `yaml:"seed"`
	FrequencyPenalty *float32 `yaml:"frequency_penalty"`
	PresencePenalty  *float32 `yaml:"presence_penalty"`
	Stop             []string `yaml:"stop"`
	User             string   `yaml:"user"`
}

// Route sends a model to a provider.
type Route struct {
	// Provider names an entry of providers.
	Provider string `yaml:"provider"`
	// Model is the upstream model name (default: the public name).
	Model string `yaml:"model"`
	// Weight is the route's share under the weighted strategy
	// (default 1).
	Weight *int `yaml:"weight"`
	// Price is what this deployment costs, where it differs from the
	// model's.
	Price *spend.Price `yaml:"price"`
}

// PriceOf is the price of model's route r: the route's, the model's, the
// config's for the upstream model, or the bundled table's; nil when none
// is known.
func (c *Config) PriceOf(model string, r Route) *spend.Price {
	if r.Price != nil {
		return r.Price
	}
	if m := c.Models[model]; m.Price != nil {
		return m.Price
	}
	upstream := r.Model
	if upstream == "" {
		upstream = model
	}
	if p, ok := c.Prices[upstream]; ok {
		return &p
	}
	return spend.Bundled(upstream)
}

// Resolve returns the model that name stands for: name itself when it is
// a model, else the model it is an alias of, else "".
func (c *Config) Resolve(name string) string {
	if _, ok := c.Models[name]; ok {
		return name
	}
	best, bestLen := "", -1
	for model, m := range c.Models {
		for _, a := range m.Aliases {
			if a == name {
				return model
			}
			if prefix, ok := strings.CutSuffix(a, "*"); ok && strings.HasPrefix(name, prefix) && len(prefix) > bestLen {
				best, bestLen = model, len(prefix)
			}
		}
	}
	return best
}

// Default returns the configuration used where the file says nothing.
func Default() Config {
	return Config{Server: Server{
		Listen:              "127.0.0.1:8080",
		MaxBodyBytes:        1 << 20,
		BodyTimeout:         Duration(30 * time.Second),
		MaxPendingBodyBytes: 64 << 20,
		GCHeapFloorBytes:    64 << 20,
		HeartbeatInterval:   Duration(15 * time.Second),
		ShutdownTimeout:     Duration(30 * time.Second),
		WriteTimeout:        Duration(30 * time.Second),
		ReadHeaderTimeout:   Duration(10 * time.Second),
		IdleTimeout:         Duration(120 * time.Second),
		Log:                 Log{Level: "info", Format: "text", FlushInterval: Duration(100 * time.Millisecond)},
	}, Health: Health{FailureThreshold: 3, Cooldown: Duration(30 * time.Second)},
		Streams: Streams{Backend: "memory", TokenTTL: Duration(15 * time.Minute), Retention: Duration(5 * time.Minute),
			LastReader: LastReaderCancel, LastReaderGrace: Duration(30 * time.Second), MaxStreamBytes: 1 << 20, MaxStreamEvents: 20000,
			MaxTotalBytes: 256 << 20, MaxReaders: 4, LeaseTTL: Duration(5 * time.Second), ReconnectDelay: Duration(time.Second),
			RedisWriteInterval: Duration(50 * time.Millisecond)},
		Responses: Responses{Backend: "memory", Retention: Duration(720 * time.Hour), MaxBytes: 64 << 20},
		Ledger:    Ledger{Backend: LedgerNone, FlushInterval: Duration(time.Second), BatchSize: 500, QueueSize: 65536},
		Retry:     Retry{AttemptsPerRoute: 2, MaxAttempts: 4, MaxTime: Duration(30 * time.Second), Backoff: Duration(250 * time.Millisecond)},
		RateLimit: RateLimit{Backend: "memory", FailureMode: "fail_open", LeaseTTL: Duration(30 * time.Second),
			IdleTTL: Duration(10 * time.Minute), MaxClients: 100000}}
}

// Problem is one thing wrong with a config file.
type Problem struct {
	Line  int    // 0 when unknown
	Field string // dotted path, e.g. models.gpt-4o.routes[0].provider
	Msg   string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists every problem found in a config file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s):", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(path, data)
	if err == nil && cfg.Ledger.Path != "" && !filepath.IsAbs(cfg.Ledger.Path) {
		cfg.Ledger.Path = filepath.Join(filepath.Dir(path), cfg.Ledger.Path)
	}
	return cfg, err
}

// Parse decodes and validates data; name is used in error messages.
func Parse(name string, data []byte) (*Config, error) {
	cfg := Default()
	cerr := &Error{File: name}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&cfg)
	var te *yaml.TypeError
	switch {
	case errors.Is(err, io.EOF):
		cerr.Problems = append(cerr.Problems, Problem{Msg: "file is empty"})
	case errors.As(err, &te):
		for _, msg := range te.Errors {
			cerr.Problems = append(cerr.Problems, yamlProblem(msg))
		}
	case err != nil:
		// A syntax error: nothing else can be trusted.
		cerr.Problems = append(cerr.Problems, yamlProblem(err.Error()))
		return nil, cerr
	}

	lines := lineIndex(data)
	for _, p := range cfg.Validate() {
		if p.Line == 0 {
			p.Line = lines.lookup(p.Field)
		}
		cerr.Problems = append(cerr.Problems, p)
	}
	if len(cerr.Problems) > 0 {
		sort.SliceStable(cerr.Problems, func(i, j int) bool { return cerr.Problems[i].Line < cerr.Problems[j].Line })
		return nil, cerr
	}
	return &cfg, nil
}

var (
	yamlLine    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	yamlUnknown = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	yamlType    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

// yamlProblem turns a yaml.v3 message into a Problem in our own words.
func yamlProblem(msg string) Problem {
	p := Problem{Msg: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Msg = m[2]
	}
	if m := yamlUnknown.FindStringSubmatch(p.Msg); m != nil {
		where := "in " + strings.ToLower(m[2]) + " settings"
		if m[2] == "Config" {
			where = "at the top level"
		}
		p.Msg = fmt.Sprintf("unknown field %q %s", m[1], where)
	} else if m := yamlType.FindStringSubmatch(p.Msg); m != nil {
		p.Msg = fmt.Sprintf("%q is a %s, want %s", m[2], m[1], m[3])
	}
	return p
}

// lines maps a dotted field path to the line where it is written.
type lines map[string]int

func lineIndex(data []byte) lines {
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return nil
	}
	idx := lines{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				idx[p] = k.Line
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				idx[p] = item.Line
				walk(item, p)
			}
		}
	}
	walk(root.Content[0], "")
	return idx
}

// lookup finds the line of path, or of its nearest written parent (a
// missing field is reported at the block that lacks it).
func (l lines) lookup(path string) int {
	for path != "" {
		if n, ok := l[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}
