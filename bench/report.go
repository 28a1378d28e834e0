package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Report is a whole benchmark run.
type Report struct {
	Machine      Machine       `json:"machine"`
	Started      time.Time     `json:"started"`
	Scenarios    []Scenario    `json:"scenarios"`
	Measurements []Measurement `json:"measurements"`
	Checks       []Check       `json:"checks"`
}

// Check is one of the targets, evaluated on a run.
type Check struct {
	Name   string  `json:"name"`
	Target string  `json:"target"` // which gateway endpoint
	Want   string  `json:"want"`
	Got    string  `json:"got"`
	Value  float64 `json:"value"`
	Pass   bool    `json:"pass"`
}

func (rep *Report) find(scenario, target string) *Measurement {
	for i := range rep.Measurements {
		if m := &rep.Measurements[i]; m.Scenario == scenario && m.Target == target {
			return m
		}
	}
	return nil
}

// cpuRatio and throughputRatio compare two rounds' figures.
func cpuRatio(g, b Round) float64        { return g.CPUPerChunkUs / b.CPUPerChunkUs }
func throughputRatio(g, b Round) float64 { return g.ChunksPerSec / b.ChunksPerSec }

// checkTargets evaluates the targets (issue 18's: close to a bare
// reverse proxy) as ratios within the run, for every gateway endpoint;
// on scenarios run in rounds, as medians of the ratios within each round
// (paired), the measured figures shown being the median rows'.
func checkTargets(rep *Report) []Check {
	var checks []Check
	for _, gw := range GatewayTargets {
		add := func(name, want string, ok bool, got string, v float64) {
			checks = append(checks, Check{Name: name, Target: gw, Want: want, Got: got, Value: v, Pass: ok})
		}
		if g, b := rep.find("throughput", gw), rep.find("throughput", TargetBaseline); g != nil && b != nil && b.CPUPerChunkUs > 0 && b.Result.ChunksPerSec > 0 {
			r := paired(g, b, cpuRatio)
			add("CPU per chunk vs baseline (64 streams)", "≤ 1.25×", r <= 1.25, fmt.Sprintf("%.2f× (%.2f vs %.2f µs)", r, g.CPUPerChunkUs, b.CPUPerChunkUs), r)
			r = paired(g, b, throughputRatio)
			add("Throughput at 64 streams vs baseline", "≥ 0.92×", r >= 0.92, fmt.Sprintf("%.2f× (%.0f vs %.0f chunks/s)", r, g.Result.ChunksPerSec, b.Result.ChunksPerSec), r)
		}
		if g, b, d := rep.find("latency", gw), rep.find("latency", TargetBaseline), rep.find("latency", TargetDirect); g != nil && b != nil && d != nil {
			// The direct time cancels out of the difference, round by
			// round: what is left is the gateway's TTFT less the proxy's.
			diff := paired(g, b, func(g, b Round) float64 { return g.TTFTP50Us - b.TTFTP50Us })
			added, baseAdded := g.Result.TTFT.P50-d.Result.TTFT.P50, b.Result.TTFT.P50-d.Result.TTFT.P50
			add("Added TTFT p50 vs baseline's", "≤ +100 µs", diff <= 100, fmt.Sprintf("%+.0f µs (medians: gateway adds %.0f µs, baseline %.0f µs)", diff, added, baseAdded), diff)
		}
		if g, b, d := rep.find("slow", gw), rep.find("slow", TargetBaseline), rep.find("slow", TargetDirect); g != nil && b != nil && d != nil && d.Result.Duration.P50 > 0 && b.Result.TTFT.P99 > 0 && b.RelayPeakRSSMiB > 0 {
			r := g.Result.TTFT.P99 / b.Result.TTFT.P99
			add("slow: TTFT p99 vs baseline", "≤ 1.15×", r <= 1.15, fmt.Sprintf("%.2f× (%.2f vs %.2f ms)", r, g.Result.TTFT.P99/1e3, b.Result.TTFT.P99/1e3), r)
			r = g.RelayPeakRSSMiB / b.RelayPeakRSSMiB
			add("slow: peak RSS vs baseline", "≤ 1.1×", r <= 1.1, fmt.Sprintf("%.2f× (%.1f vs %.1f MiB; above the process's own %.1f and %.1f MiB: %s)", r, g.RelayPeakRSSMiB, b.RelayPeakRSSMiB,
				g.RelayStartRSSMiB, b.RelayStartRSSMiB, ratioText(g.RelayPeakRSSMiB-g.RelayStartRSSMiB, b.RelayPeakRSSMiB-b.RelayStartRSSMiB)), r)
			gr, br := g.Result.Duration.P50/d.Result.Duration.P50-1, b.Result.Duration.P50/d.Result.Duration.P50-1
			add("slow: median stream duration vs direct", "≤ baseline's + 1 point", gr <= br+0.01,
				fmt.Sprintf("%+.2f%% (baseline %+.2f%%)", gr*100, br*100), gr-br)
		}
		if g, b := rep.find("idle", gw), rep.find("idle", TargetBaseline); g != nil {
			var want int
			for _, sc := range rep.Scenarios {
				if sc.Name == "idle" {
					want = sc.Requests
				}
			}
			add("idle: streams completed without error", fmt.Sprintf("%d of %d", want, want), g.Result.Errors == 0 && g.Result.Streams == want,
				fmt.Sprintf("%d ok, %d errors", g.Result.Streams, g.Result.Errors), float64(g.Result.Streams))
			per := func(mib float64) float64 { return mib * 1024 / float64(max(want, 1)) }
			perStream, added := per(g.RelayPeakRSSMiB), per(g.RelayPeakRSSMiB-g.RelayStartRSSMiB)
			basePer, baseAdded := perStream, added
			if b != nil {
				basePer, baseAdded = per(b.RelayPeakRSSMiB), per(b.RelayPeakRSSMiB-b.RelayStartRSSMiB)
			}
			add("idle: peak RSS per open stream", "≤ 40 KiB and below baseline's", perStream <= 40 && perStream < basePer,
				fmt.Sprintf("%.1f KiB (baseline %.1f KiB; above the process's own: %.1f and %.1f KiB)", perStream, basePer, added, baseAdded), perStream)
		}
	}
	// The translating endpoints against the chat endpoint they translate.
	for _, tr := range []string{TargetGatewayMessages, TargetGatewayResponses} {
		if g, c := rep.find("throughput", tr), rep.find("throughput", TargetGatewayChat); g != nil && c != nil && c.CPUPerChunkUs > 0 {
			r := paired(g, c, cpuRatio)
			checks = append(checks, Check{Name: "CPU per chunk vs gateway-chat", Target: tr, Want: "≤ 1.1×", Pass: r <= 1.1, Value: r,
				Got: fmt.Sprintf("%.2f× (%.2f vs %.2f µs)", r, g.CPUPerChunkUs, c.CPUPerChunkUs)})
		}
	}
	// What the ledger and tracing cost: the same endpoint with each on
	// and off.
	for _, v := range []struct{ target, what string }{{TargetGatewayChatLedger, "ledger"}, {TargetGatewayChatTraced, "tracing"}} {
		on, off := rep.find("throughput", v.target), rep.find("throughput", TargetGatewayChat)
		if on == nil || off == nil || off.CPUPerChunkUs <= 0 || off.Result.ChunksPerSec <= 0 {
			continue
		}
		add := func(name, want string, ok bool, got string, val float64) {
			checks = append(checks, Check{Name: name, Target: v.target, Want: want, Got: got, Value: val, Pass: ok})
		}
		r := paired(on, off, cpuRatio)
		add("CPU per chunk, "+v.what+" on vs off", "≤ 1.05×", r <= 1.05, fmt.Sprintf("%.3f× (%.2f vs %.2f µs)", r, on.CPUPerChunkUs, off.CPUPerChunkUs), r)
		r = paired(on, off, throughputRatio)
		add("Throughput, "+v.what+" on vs off", "≥ 0.95×", r >= 0.95, fmt.Sprintf("%.3f× (%.0f vs %.0f chunks/s)", r, on.Result.ChunksPerSec, off.Result.ChunksPerSec), r)
	}
	return checks
}

// Write writes results.md, results.json and results.svg into dir.
func (rep *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	rep.WriteMarkdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	var svg strings.Builder
	rep.WriteSVG(&svg)
	return os.WriteFile(filepath.Join(dir, "results.svg"), []byte(svg.String()), 0o644)
}

// WriteMarkdown writes the results table and the target checks.
func (rep *Report) WriteMarkdown(w io.Writer) {
	m := rep.Machine
	fmt.Fprintf(w, "Run of %s on %s, %d cores, %d GiB, %s (%s), open-file limit %d.\n\n",
		rep.Started.Format(time.RFC3339), m.CPU, m.Cores, m.MemoryGiB, m.Go, m.OS, m.FileLimit)
	fmt.Fprintln(w, "| scenario | target | streams ok | errors | chunks/s | TTFT p50 | p90 | p99 | max | gap p50 | gap p99 | duration p50 | relay CPU/chunk | relay peak RSS | relay RSS before the load |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, x := range rep.Measurements {
		r := x.Result
		fmt.Fprintf(w, "| %s | %s | %d | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %.2f µs | %.1f MiB | %.1f MiB |\n",
			x.Scenario, x.Target, r.Streams, r.Errors, r.ChunksPerSec,
			fmtUs(r.TTFT.P50), fmtUs(r.TTFT.P90), fmtUs(r.TTFT.P99), fmtUs(r.TTFT.Max),
			fmtUs(r.Gap.P50), fmtUs(r.Gap.P99), fmtUs(r.Duration.P50), x.CPUPerChunkUs, x.RelayPeakRSSMiB, x.RelayStartRSSMiB)
	}
	fmt.Fprintln(w, "\n\"relay\" is the process between the load generator and the mock: the baseline proxy or the gateway (for `direct`, the mock itself).")
	rep.writeRounds(w)
	var redisRows []Measurement
	for _, x := range rep.Measurements {
		if x.RedisCommandsPerStream > 0 {
			redisRows = append(redisRows, x)
		}
	}
	if len(redisRows) > 0 {
		fmt.Fprintln(w, "\n| scenario | Redis-backed target | Redis commands per stream | Redis CPU per stream |")
		fmt.Fprintln(w, "|---|---|--:|--:|")
		for _, x := range redisRows {
			fmt.Fprintf(w, "| %s | %s | %.1f | %.0f µs |\n", x.Scenario, x.Target, x.RedisCommandsPerStream, x.RedisCPUPerStreamUs)
		}
	}
	if len(rep.Checks) == 0 {
		return
	}
	fmt.Fprintln(w, "\nOn scenarios run in rounds, each ratio (or difference) below is the median of the ones within each round, the targets of a round having run minutes apart at most; the figures in brackets are the median rows'.")
	fmt.Fprintln(w, "\n| target | endpoint | want | measured | |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, c := range rep.Checks {
		mark := "missed"
		if c.Pass {
			mark = "met"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", c.Name, c.Target, c.Want, c.Got, mark)
	}
}

// writeRounds lists every round of the scenarios run more than once:
// how far one round is from another is the noise the ratios carry.
func (rep *Report) writeRounds(w io.Writer) {
	header := false
	for _, x := range rep.Measurements {
		if len(x.Rounds) < 2 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nScenarios run in rounds (every target once per round, in turn) report each target's median round: by TTFT p50 for latency, by CPU per chunk otherwise. Every round:")
			fmt.Fprintln(w, "\n| scenario | target | relay CPU/chunk | chunks/s | TTFT p50 |")
			fmt.Fprintln(w, "|---|---|---|---|---|")
			header = true
		}
		var cpu, cps, ttft []string
		for _, r := range x.Rounds {
			cpu = append(cpu, fmt.Sprintf("%.2f", r.CPUPerChunkUs))
			cps = append(cps, fmt.Sprintf("%.0f", r.ChunksPerSec))
			ttft = append(ttft, fmtUs(r.TTFTP50Us))
		}
		fmt.Fprintf(w, "| %s | %s | %s µs | %s | %s |\n", x.Scenario, x.Target, strings.Join(cpu, " / "), strings.Join(cps, " / "), strings.Join(ttft, " / "))
	}
}

func fmtUs(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2f ms", v/1e3)
	default:
		return fmt.Sprintf("%.0f µs", v)
	}
}

// WriteSVG draws four bar charts: throughput and CPU per chunk at 64
// streams, TTFT p50 one stream at a time, and peak RSS in the slow
// scenario, for every target.
func (rep *Report) WriteSVG(w io.Writer) {
	type panel struct {
		title, scenario, unit string
		value                 func(*Measurement) float64
	}
	panels := []panel{
		{"Throughput, 64 streams", "throughput", "chunks/s", func(m *Measurement) float64 { return m.Result.ChunksPerSec }},
		{"CPU per relayed chunk", "throughput", "µs", func(m *Measurement) float64 { return m.CPUPerChunkUs }},
		{"Time to first token p50", "latency", "µs", func(m *Measurement) float64 { return m.Result.TTFT.P50 }},
		{"Peak RSS, 1,000 slow streams", "slow", "MiB", func(m *Measurement) float64 { return m.RelayPeakRSSMiB }},
	}
	colors := map[string]string{TargetDirect: "#9ca3af", TargetBaseline: "#60a5fa", TargetGatewayNative: "#10b981", TargetGatewayChat: "#059669", TargetGatewayMessages: "#d97706", TargetGatewayResponses: "#7c3aed"}
	const pw, ph, pad = 300, 220, 20
	width := len(panels)*(pw+pad) + pad
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", width, ph+90)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for i, p := range panels {
		x0 := pad + i*(pw+pad)
		fmt.Fprintf(w, `<text x="%d" y="20" font-size="13" font-weight="bold">%s</text>`+"\n", x0, html.EscapeString(p.title))
		var maxV float64
		for _, t := range Targets {
			if m := rep.find(p.scenario, t); m != nil {
				maxV = max(maxV, p.value(m))
			}
		}
		if maxV == 0 {
			continue
		}
		labels := map[string]string{TargetDirect: "direct", TargetBaseline: "baseline", TargetGatewayNative: "gw native", TargetGatewayChat: "gw chat", TargetGatewayMessages: "gw messages", TargetGatewayResponses: "gw responses"}
		bw := pw / len(Targets)
		const top, barMax = 48, ph - 60 // room for the title and value labels
		for j, t := range Targets {
			m := rep.find(p.scenario, t)
			if m == nil {
				continue
			}
			v := p.value(m)
			h := int(v / maxV * barMax)
			x := x0 + j*bw + 6
			y := top + barMax - h
			fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", x, y, bw-12, h, colors[t])
			fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x+(bw-12)/2, y-4, html.EscapeString(short(v)))
			fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x+(bw-12)/2, top+barMax+16, labels[t])
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="#555">%s</text>`+"\n", x0, ph+30, p.unit)
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" fill="#555">%s, %d cores, %s</text>`+"\n", pad, ph+60, html.EscapeString(rep.Machine.CPU), rep.Machine.Cores, rep.Started.Format("2006-01-02"))
	fmt.Fprintln(w, "</svg>")
}

func short(v float64) string {
	switch {
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// ratioText is a/b as "1.23×", or "n/a" when b is not positive.
func ratioText(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}
