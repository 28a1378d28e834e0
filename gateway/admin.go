package gateway

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// handleDeployments serves GET /admin/deployments: every model's routes in
// configured order, with the state routing decides by.
func (g *generation) handleDeployments(c *gin.Context) {
	models := make([]gin.H, 0, len(g.reg.Models()))
	for _, name := range g.reg.Models() {
		deps := g.reg.Deployments(name)
		routes := make([]gin.H, 0, len(deps))
		for _, d := range deps {
			r := gin.H{"provider": d.Provider, "model": d.Model, "weight": d.Weight, "state": d.State,
				"in_flight": d.InFlight, "consecutive_failures": d.ConsecutiveFailures, "ttft_ms": float64(d.TTFT.Microseconds()) / 1000}
			if d.State == "cooldown" {
				r["cooldown_until"] = d.CooldownUntil.UTC().Format(time.RFC3339Nano)
			}
			routes = append(routes, r)
		}
		models = append(models, gin.H{"model": name, "strategy": g.reg.Strategy(name), "routes": routes})
	}
	c.JSON(http.StatusOK, gin.H{"models": models})
}

// cooldownCollector reports, at scrape time, which deployments of the
// current generation are on cooldown.
type cooldownCollector struct{ s *Server }

var cooldownDesc = prometheus.NewDesc("gateway_deployment_cooldown", "1 while a deployment (a model's route to a provider's upstream model) is on cooldown after repeated failures, else 0.", []string{"model", "provider", "upstream_model"}, nil)

func (c cooldownCollector) Describe(ch chan<- *prometheus.Desc) { ch <- cooldownDesc }

func (c cooldownCollector) Collect(ch chan<- prometheus.Metric) {
	reg := c.s.cur.Load().reg
	for _, name := range reg.Models() {
		for _, d := range reg.Deployments(name) {
			v := 0.0
			if d.State == "cooldown" {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(cooldownDesc, prometheus.GaugeValue, v, name, d.Provider, d.Model)
		}
	}
}
