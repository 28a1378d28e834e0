package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gin-gonic/gin"
)

// metrics are the gateway's Prometheus metrics. Each Server has its own
// registry (tests run many servers in one process). Labels hold only
// bounded values: never request ids, stream ids or keys.
type metrics struct {
	reg *prometheus.Registry

	unattendedTokens prometheus.Counter
	resumes          *prometheus.CounterVec
	streamsCancelled *prometheus.CounterVec
	producersLost    prometheus.Counter
}

func newMetrics(h *streamHub) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.unattendedTokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_stream_unattended_tokens_total",
		Help: "Deltas (about a token each) generated while no reader was attached to their stream.",
	})
	m.resumes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_stream_resumes_total",
		Help: "Readers that followed a stream through GET /v1/streams/{id}, by where its events came from (memory: this replica, redis: another).",
	}, []string{"source"})
	m.streamsCancelled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_streams_cancelled_total",
		Help: "Resumable streams cancelled before their end, by reason (delete, last_reader).",
	}, []string{"reason"})
	m.producersLost = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gateway_stream_producers_lost_total",
		Help: "Streams this replica ended with producer_lost: their producing replica stopped renewing its lease.",
	})
	m.reg.MustRegister(m.unattendedTokens, m.resumes, m.streamsCancelled, m.producersLost,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_stream_store_bytes",
			Help: "Bytes held by the stream logs in this replica's memory (bounded by streams.max_total_bytes).",
		}, func() float64 { _, b := h.mem.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_stream_store_streams",
			Help: "Stream logs held in this replica's memory, live or finished and still retained.",
		}, func() float64 { n, _ := h.mem.Stats(); return float64(n) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// handler serves GET /metrics in the Prometheus exposition format.
func (m *metrics) handler() gin.HandlerFunc {
	return gin.WrapH(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
}
