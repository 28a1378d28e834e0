// Package metrics holds the gateway's Prometheus metrics and the
// observers through which the engine's packages report to them.
package metrics

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/streamgate/gateway/failure"
	"github.com/streamgate/gateway/middleware"
)

// Metrics are the gateway's Prometheus metrics, documented in
// docs/operations.md. Each gateway process (each test server) has its own
// registry (tests run many
// servers in one process). Labels hold only bounded values: configured
// model, provider and key names, route patterns, status codes and the
// gateway's own error codes; never request ids, stream ids, keys or
// upstream-supplied strings.
type Metrics struct {
	reg *prometheus.Registry
	// collectors are every collector registered, for Names.
	mu         sync.Mutex
	collectors []prometheus.Collector
	// serve answers GET /metrics.
	serve gin.HandlerFunc

	requests       *prometheus.CounterVec
	ttft           *prometheus.HistogramVec
	ttfc           *prometheus.HistogramVec
	gap            *prometheus.HistogramVec
	duration       *prometheus.HistogramVec
	tokens         *prometheus.CounterVec
	inFlight       *prometheus.GaugeVec
	endings        *prometheus.CounterVec
	rateLimited    *prometheus.CounterVec
	budgetCrossed  *prometheus.CounterVec
	upstreamErrors *prometheus.CounterVec
	retries        *prometheus.CounterVec
	fallbacks      *prometheus.CounterVec
	reloads        *prometheus.CounterVec

	unattendedTokens prometheus.Counter
	resumes          *prometheus.CounterVec
	streamsCancelled *prometheus.CounterVec
	producersLost    prometheus.Counter
	mirrorLag        prometheus.Histogram
	mirrorFailures   *prometheus.CounterVec

	cost          *prometheus.CounterVec
	ledgerRows    *prometheus.CounterVec
	ledgerFailure prometheus.Counter
}

// Buckets in seconds that resolve milliseconds where streaming lives.
var (
	ttftBuckets     = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	gapBuckets      = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	durationBuckets = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// New returns the gateway's metrics on a registry of their own.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	}
	m.requests = counter("gateway_requests_total", "HTTP requests by route pattern, model, provider and status.", "route", "model", "provider", "status")
	m.ttft = histogram("gateway_time_to_first_token_seconds", "From a request's arrival to its first delta.", ttftBuckets, "model", "provider")
	m.ttfc = histogram("gateway_time_to_first_content_seconds", "From a request's arrival to its first answer text or tool call; later than the time to first token when the model streams its thinking first.", ttftBuckets, "model", "provider")
	m.gap = histogram("gateway_inter_token_gap_seconds", "Between consecutive deltas of a stream.", gapBuckets, "model", "provider")
	m.duration = histogram("gateway_stream_duration_seconds", "From a stream's request to its end.", durationBuckets, "endpoint", "model", "provider")
	m.tokens = counter("gateway_tokens_total", "Tokens by model, provider, key name and kind: prompt and completion (as reported by the upstream, or counted), and the parts of them the upstream reports: cached_prompt (read from its prompt cache), reasoning (spent thinking), cache_write (written to its prompt cache).", "model", "provider", "key", "kind")
	m.inFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gateway_streams_in_flight", Help: "Streams being generated, by endpoint."}, []string{"endpoint"})
	m.endings = counter("gateway_stream_endings_total", "Streams ended, by endpoint and how: done, client_gone, upstream_error, timeout, cancelled, shutdown.", "endpoint", "reason")
	m.rateLimited = counter("gateway_rate_limit_rejections_total", "Requests refused by a limit: requests, tokens, concurrency, budget, provider_queue, limiter_unavailable.", "limit")
	m.budgetCrossed = counter("gateway_budget_soft_limit_crossed_total", "Times a key's spend crossed a soft budget amount (budget.soft_dollars or soft_tokens), by key and kind (dollars, tokens).", "key", "kind")
	m.upstreamErrors = counter("gateway_upstream_errors_total", "Failed upstream attempts, by provider and the gateway's error code (upstream codes are reduced to http_STATUS).", "provider", "code")
	m.retries = counter("gateway_upstream_retries_total", "Attempts that retried the same deployment before the first delta.", "provider")
	m.fallbacks = counter("gateway_upstream_fallbacks_total", "Moves to the next route before the first delta, by model.", "model")
	m.reloads = counter("gateway_config_reloads_total", "Configuration reloads (SIGHUP or a changed file), by result: success, failure (the running configuration stayed).", "result")
	m.unattendedTokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_stream_unattended_tokens_total",
		Help: "Deltas (about a token each) generated while no reader was attached to their stream: after the client left.",
	})
	m.resumes = counter("gateway_stream_resumes_total", "Readers that followed a stream through GET /v1/streams/{id}, by where its events came from (memory: this replica, redis: another).", "source")
	m.streamsCancelled = counter("gateway_streams_cancelled_total", "Resumable streams cancelled before their end, by reason (delete, last_reader).", "reason")
	m.producersLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_stream_producers_lost_total",
		Help: "Streams this replica ended with producer_lost: their producing replica stopped renewing its lease.",
	})
	m.mirrorLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gateway_stream_mirror_lag_seconds",
		Help:    "How far the Redis copy of resumable streams trails them: from the first event of a batch relayed to the batch written to Redis (streams.backend redis). Above streams.redis_write_interval it measures Redis or its writers falling behind.",
		Buckets: gapBuckets,
	})
	m.mirrorFailures = counter("gateway_stream_mirror_failures_total", "Writes of resumable streams' events or leases to Redis that failed (streams.backend redis), by action: retried (the lease left time to write them again), stopped (that stream's mirror stopped: readers on other replicas will see producer_lost).", "action")
	m.cost = counter("gateway_cost_dollars_total", "What requests cost in US dollars at the configured (or bundled) prices, by model, provider and key name; requests of deployments without a price add nothing.", "model", "provider", "key")
	m.ledgerRows = counter("gateway_ledger_rows_total", "Usage ledger rows, by result: written (stored in the database), dropped (the queue was full: the database was down or slow for longer than the queue holds).", "result")
	m.ledgerFailure = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_ledger_write_errors_total",
		Help: "Usage ledger batch writes that failed (the batch is kept and retried).",
	})
	m.Register(m.requests, m.ttft, m.ttfc, m.gap, m.duration, m.tokens, m.inFlight, m.endings, m.rateLimited,
		m.upstreamErrors, m.retries, m.fallbacks, m.reloads, m.unattendedTokens, m.resumes, m.streamsCancelled, m.producersLost, m.mirrorLag, m.mirrorFailures,
		m.cost, m.ledgerRows, m.ledgerFailure, m.budgetCrossed,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.serve = gin.WrapH(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

// Register adds collectors of state the caller owns (gauges read at
// scrape time).
func (m *Metrics) Register(cs ...prometheus.Collector) {
	m.reg.MustRegister(cs...)
	m.mu.Lock()
	m.collectors = append(m.collectors, cs...)
	m.mu.Unlock()
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// Names are the metrics this process exports, each with its labels:
// what dashboards and alerts may query (their test checks them here).
func (m *Metrics) Names() map[string][]string {
	m.mu.Lock()
	cs := slices.Clone(m.collectors)
	m.mu.Unlock()
	out := map[string][]string{}
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	// Desc has no accessors: its String is the one way to read it.
	for d := range ch {
		s := d.String()
		name := descName.FindStringSubmatch(s)
		if name == nil {
			continue
		}
		var labels []string
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			labels = strings.Split(l[1], ",")
		}
		out[name[1]] = labels
	}
	return out
}

// Gather reads every metric, as a scrape would.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) { return m.reg.Gather() }

// Serve answers GET /metrics.
func (m *Metrics) Serve(c *gin.Context) { m.serve(c) }

// CountRequests counts every request once it has been answered.
func (m *Metrics) CountRequests(c *gin.Context) {
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	info := middleware.Get(c)
	m.requests.WithLabelValues(route, info.Model, info.Provider, strconv.Itoa(c.Writer.Status())).Inc()
}

// StreamObserver measures one stream as its deltas pass (a
// relay.Observer).
type StreamObserver struct {
	m        *Metrics
	model    string
	provider func() string
	gap      prometheus.Observer
	last     time.Time
	// unattended, when set, reports that nobody reads the stream.
	unattended func() bool
}

// Stream returns the observer of one stream of model; provider names the
// provider that answered, asked at the first delta (retries may change it
// until then); unattended, if set, reports that nobody reads the stream.
func (m *Metrics) Stream(model string, provider func() string, unattended func() bool) *StreamObserver {
	return &StreamObserver{m: m, model: model, provider: provider, unattended: unattended}
}

// FirstDelta records the time to the first delta.
func (o *StreamObserver) FirstDelta(ttft time.Duration) {
	p := o.provider()
	o.m.ttft.WithLabelValues(o.model, p).Observe(ttft.Seconds())
	o.gap = o.m.gap.WithLabelValues(o.model, p)
}

// FirstContent records the time to the first answer content.
func (o *StreamObserver) FirstContent(d time.Duration) {
	o.m.ttfc.WithLabelValues(o.model, o.provider()).Observe(d.Seconds())
}

// Delta records a delta relayed at now.
func (o *StreamObserver) Delta(now time.Time) {
	if !o.last.IsZero() {
		o.gap.Observe(now.Sub(o.last).Seconds())
	}
	o.last = now
	if o.unattended != nil && o.unattended() {
		o.m.unattendedTokens.Inc()
	}
}

// InFlight is the gauge of streams being generated on endpoint.
func (m *Metrics) InFlight(endpoint string) prometheus.Gauge {
	return m.inFlight.WithLabelValues(endpoint)
}

// StreamEnded records a stream of endpoint (a dialect's label) ending,
// from its access-log record.
func (m *Metrics) StreamEnded(endpoint string, info *middleware.Info, d time.Duration) {
	reason := info.End.String()
	if strings.HasSuffix(info.ErrorCode, "_timeout") {
		reason = "timeout"
	}
	m.endings.WithLabelValues(endpoint, reason).Inc()
	m.duration.WithLabelValues(endpoint, info.Model, info.Provider).Observe(d.Seconds())
	if info.PromptTokens > 0 || info.CompletionTokens > 0 {
		m.tokens.WithLabelValues(info.Model, info.Provider, info.KeyName, "prompt").Add(float64(info.PromptTokens))
		m.tokens.WithLabelValues(info.Model, info.Provider, info.KeyName, "completion").Add(float64(info.CompletionTokens))
	}
	if info.CachedTokens > 0 {
		m.tokens.WithLabelValues(info.Model, info.Provider, info.KeyName, "cached_prompt").Add(float64(info.CachedTokens))
	}
	if info.ReasoningTokens > 0 {
		m.tokens.WithLabelValues(info.Model, info.Provider, info.KeyName, "reasoning").Add(float64(info.ReasoningTokens))
	}
	if info.CacheWriteTokens > 0 {
		m.tokens.WithLabelValues(info.Model, info.Provider, info.KeyName, "cache_write").Add(float64(info.CacheWriteTokens))
	}
	if info.Priced && info.Cost > 0 {
		m.cost.WithLabelValues(info.Model, info.Provider, info.KeyName).Add(info.Cost)
	}
}

// LedgerWritten, LedgerDropped and LedgerFailed make Metrics the ledger's
// Observer.
func (m *Metrics) LedgerWritten(rows int) { m.ledgerRows.WithLabelValues("written").Add(float64(rows)) }
func (m *Metrics) LedgerDropped()         { m.ledgerRows.WithLabelValues("dropped").Inc() }
func (m *Metrics) LedgerFailed()          { m.ledgerFailure.Inc() }

// Retried, FellBack, Failed and QueueFull make Metrics the upstream
// package's Observer.
func (m *Metrics) Retried(provider string) { m.retries.WithLabelValues(provider).Inc() }
func (m *Metrics) FellBack(model string)   { m.fallbacks.WithLabelValues(model).Inc() }
func (m *Metrics) Failed(provider string, e *failure.Error) {
	m.upstreamErrors.WithLabelValues(provider, code(e)).Inc()
}
func (m *Metrics) QueueFull(string) { m.rateLimited.WithLabelValues("provider_queue").Inc() }

// Rejected makes Metrics the admission package's Observer.
func (m *Metrics) Rejected(limit string) { m.rateLimited.WithLabelValues(limit).Inc() }

// BudgetCrossed counts a key's spend crossing a soft budget amount.
func (m *Metrics) BudgetCrossed(key, kind string) { m.budgetCrossed.WithLabelValues(key, kind).Inc() }

// Resumed counts a reader following a stream from source (memory, redis).
func (m *Metrics) Resumed(source string) { m.resumes.WithLabelValues(source).Inc() }

// Cancelled counts a resumable stream cancelled for reason (delete,
// last_reader).
func (m *Metrics) Cancelled(reason string) { m.streamsCancelled.WithLabelValues(reason).Inc() }

// ProducerLost counts a stream ended because its producer's replica died.
func (m *Metrics) ProducerLost() { m.producersLost.Inc() }

// MirrorLag records how far a batch of a stream's events reached Redis
// after its first event was relayed.
func (m *Metrics) MirrorLag(lag time.Duration) { m.mirrorLag.Observe(lag.Seconds()) }

// MirrorFailed counts a failed write of a stream's mirror, retried or
// stopping it.
func (m *Metrics) MirrorFailed(retried bool) {
	action := "stopped"
	if retried {
		action = "retried"
	}
	m.mirrorFailures.WithLabelValues(action).Inc()
}

// Reloaded counts a configuration reload by result (success, failure).
func (m *Metrics) Reloaded(result string) { m.reloads.WithLabelValues(result).Inc() }

// code is e's code for a label: the gateway's own codes as they are, an
// upstream's reduced to its status, since upstreams may say anything.
func code(e *failure.Error) string {
	switch {
	case strings.HasPrefix(e.Code, "upstream_"), strings.HasPrefix(e.Code, "provider_"):
		return e.Code
	}
	return "http_" + strconv.Itoa(e.Status)
}
