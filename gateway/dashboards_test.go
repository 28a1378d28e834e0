package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var (
	metricRef  = regexp.MustCompile(`\b(?:gateway|process|go)_[a-z0-9_]+\b`)
	matchers   = regexp.MustCompile(`\b((?:gateway|process|go)_[a-z0-9_]+)\{([^}]*)\}`)
	matchLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	grouping   = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// targetLabels are those Prometheus adds to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// exprProblems says what is wrong with expr: a metric that the gateway
// does not export (a histogram counts by its _bucket, _sum and _count
// series), a label matched on that its metric lacks, a label grouped by
// that none of its metrics has.
func exprProblems(where, expr string, names map[string][]string) []string {
	var ps []string
	errorf := func(format string, args ...any) { ps = append(ps, where+": "+fmt.Sprintf(format, args...)) }
	if strings.TrimSpace(expr) == "" {
		errorf("empty expression")
		return ps
	}
	labelsOf := func(ref string) ([]string, bool) {
		if l, ok := names[ref]; ok {
			return l, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if l, ok := names[strings.TrimSuffix(ref, suffix)]; ok && strings.HasSuffix(ref, suffix) {
				if suffix == "_bucket" {
					l = append(slices.Clone(l), "le")
				}
				return l, true
			}
		}
		return nil, false
	}
	all := slices.Clone(targetLabels)
	refs := metricRef.FindAllString(expr, -1)
	if len(refs) == 0 {
		errorf("%q names no gateway metric", expr)
	}
	for _, ref := range refs {
		l, ok := labelsOf(ref)
		if !ok {
			errorf("%s is not a metric the gateway exports", ref)
		}
		all = append(all, l...)
	}
	for _, m := range matchers.FindAllStringSubmatch(expr, -1) {
		l, _ := labelsOf(m[1])
		for _, lm := range matchLabel.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(l, lm[1]) {
				errorf("%s has no label %q", m[1], lm[1])
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for _, label := range strings.Split(g[1], ",") {
			if label = strings.TrimSpace(label); label != "" && !slices.Contains(all, label) {
				errorf("groups by %q, a label of none of its metrics", label)
			}
		}
	}
	return ps
}

func checkExpr(t *testing.T, where, expr string, names map[string][]string) {
	t.Helper()
	for _, p := range exprProblems(where, expr, names) {
		t.Error(p)
	}
}

// exportedMetrics are the metrics of a gateway with every optional part
// that registers metrics switched on (the ledger).
func exportedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	_, _, url := recordingUpstream(t, pricedChunks...)
	h := newHarness(t, ledgerConfig(url, "sqlite", filepath.Join(t.TempDir(), "usage.db")))
	return h.srv.metrics.Names()
}

// TestDashboardQueriesExist: every query of the Grafana dashboard (panels
// and variables) names only metrics and labels the gateway exports.
func TestDashboardQueriesExist(t *testing.T) {
	names := exportedMetrics(t)
	b, err := os.ReadFile("../deploy/grafana/gateway-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string `json:"title"`
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) < 10 {
		t.Fatalf("dashboard %q (%q) has %d panels", d.Title, d.UID, len(d.Panels))
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			checkExpr(t, "panel "+p.Title, q.Expr, names)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			checkExpr(t, "variable "+v.Name, strings.NewReplacer("label_values(", "", ", model)", "").Replace(q["query"].(string)), names)
		}
	}
	// The dashboard covers what the issue names.
	for _, want := range []string{"gateway_requests_total", "gateway_time_to_first_token_seconds_bucket", "gateway_inter_token_gap_seconds_bucket",
		"gateway_streams_in_flight", "gateway_stream_endings_total", "gateway_rate_limit_rejections_total", "gateway_upstream_retries_total",
		"gateway_upstream_fallbacks_total", "gateway_deployment_cooldown", "gateway_tokens_total", "gateway_cost_dollars_total"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}

// TestAlertRulesExist: the alerting rules decode strictly as Prometheus
// rule groups, each rule has a severity and a summary, and its expression
// names only metrics and labels the gateway exports.
func TestAlertRulesExist(t *testing.T) {
	names := exportedMetrics(t)
	b, err := os.ReadFile("../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v lacks a name, severity or summary", r)
			}
			checkExpr(t, "alert "+r.Alert, r.Expr, names)
		}
	}
	for _, want := range []string{"GatewayTTFTHigh", "GatewayErrorRateHigh", "GatewayProducerLost"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s among %v", want, alerts)
		}
	}
}

// TestCheckExprCatches: the checker itself refuses a misspelt metric, a
// label the metric lacks and a grouping by a label of none.
func TestCheckExprCatches(t *testing.T) {
	names := map[string][]string{"gateway_requests_total": {"model"}, "gateway_gap_seconds": {"model"}}
	for _, expr := range []string{
		"rate(gateway_request_total[5m])",
		`rate(gateway_requests_total{route="x"}[5m])`,
		"sum by (provider) (rate(gateway_requests_total[5m]))",
		"histogram_quantile(0.5, rate(gateway_gap_seconds_buckets[5m]))",
	} {
		if len(exprProblems("test", expr, names)) == 0 {
			t.Errorf("%q passed the check", expr)
		}
	}
}
