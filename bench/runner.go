package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/streamgate/gateway/config"
)

// Scenario is one load shape, run against every target in turn.
type Scenario struct {
	Name        string        `json:"name"`
	Tokens      int           `json:"tokens"`
	Delay       time.Duration `json:"delay_ns"`
	Concurrency int           `json:"concurrency"`
	Requests    int           `json:"requests,omitempty"`
	Duration    time.Duration `json:"duration_ns,omitempty"`
	RampUp      time.Duration `json:"ramp_up_ns,omitempty"`
	// H2C carries client connections over cleartext HTTP/2. The idle
	// scenario needs it: over HTTP/1.1 a relay holds two sockets per
	// stream, and 10,000 streams would pass the 20,000 descriptors this
	// machine allows one process.
	H2C bool `json:"h2c,omitempty"`
	// Rounds runs the scenario that many times over all targets in turn,
	// so that a drift in the machine's speed during the run (a shared
	// VM's neighbours) falls on every target alike; each target's row is
	// then its median round (see median). 0 is one round.
	Rounds int `json:"rounds,omitempty"`
}

// Scenarios are the four load shapes.
func Scenarios() []Scenario {
	return []Scenario{
		// Five rounds, not three: one round of three on a shared machine
		// could move a target's paired ratio by a tenth on its own (chat
		// 1.19 / 1.28 / 1.34× a chunk in one run, its code unchanged).
		{Name: "latency", Tokens: 64, Concurrency: 1, Duration: 3 * time.Second, Rounds: 5},
		{Name: "throughput", Tokens: 64, Concurrency: 64, Duration: 5 * time.Second, Rounds: 5},
		{Name: "slow", Tokens: 256, Delay: 20 * time.Millisecond, Concurrency: 1000, Requests: 1000, RampUp: time.Second},
		{Name: "idle", Tokens: 30, Delay: time.Second, Concurrency: 10000, Requests: 10000, RampUp: 5 * time.Second, H2C: true},
	}
}

// QuickScenarios are the same shapes made tiny, for the smoke test that
// keeps the tooling from rotting.
func QuickScenarios() []Scenario {
	return []Scenario{
		{Name: "latency", Tokens: 16, Concurrency: 1, Requests: 10},
		{Name: "throughput", Tokens: 16, Concurrency: 8, Requests: 40, Rounds: 2},
		{Name: "slow", Tokens: 8, Delay: 5 * time.Millisecond, Concurrency: 20, Requests: 20},
		{Name: "idle", Tokens: 3, Delay: 50 * time.Millisecond, Concurrency: 50, Requests: 50, H2C: true},
	}
}

// Targets, in the order each scenario runs them.
const (
	TargetDirect        = "direct"         // the mock upstream itself
	TargetBaseline      = "baseline"       // httputil.ReverseProxy in front of it
	TargetGatewayNative = "gateway-native" // the gateway's /v1/stream
	TargetGatewayChat   = "gateway-chat"   // the gateway's /v1/chat/completions
	// TargetGatewayMessages is the gateway's /v1/messages, translating
	// the mock's OpenAI chunks into Anthropic's events.
	TargetGatewayMessages = "gateway-messages"
	// TargetGatewayResponses is the gateway's /v1/responses, likewise
	// translating.
	TargetGatewayResponses = "gateway-responses"
	// TargetGatewayChatLedger is gateway-chat with every request priced
	// and written to a SQLite usage ledger.
	TargetGatewayChatLedger = "gateway-chat-ledger"
	// TargetGatewayChatTraced is gateway-chat with every request traced
	// (sample ratio 1) and its spans exported over OTLP/HTTP to a
	// collector that discards them.
	TargetGatewayChatTraced = "gateway-chat-traced"
	// TargetGatewayNativeRedis is gateway-native with its limits and its
	// streams' logs in Redis (a local redis-server), as replicas that
	// share them run.
	TargetGatewayNativeRedis = "gateway-native-redis"
)

// Targets lists every target.
var Targets = []string{TargetDirect, TargetBaseline, TargetGatewayNative, TargetGatewayNativeRedis, TargetGatewayChat, TargetGatewayChatLedger, TargetGatewayChatTraced, TargetGatewayMessages, TargetGatewayResponses}

// GatewayTargets are the targets served by the gateway.
var GatewayTargets = []string{TargetGatewayNative, TargetGatewayNativeRedis, TargetGatewayChat, TargetGatewayChatLedger, TargetGatewayChatTraced, TargetGatewayMessages, TargetGatewayResponses}

// Runner starts the servers as separate processes (so their CPU time and
// memory can be read from /proc) and runs every scenario against every
// target.
type Runner struct {
	GatewayBin string // the gateway binary
	BenchBin   string // a binary with the mock and baseline subcommands
	Scenarios  []Scenario
	WorkDir    string    // configs and server logs go here
	Log        io.Writer // progress
	// Profile makes a profiling run instead: each scenario against
	// ProfileTargets, with the gateway's CPU and allocation profiles
	// (which cost CPU: the figures of such a run are not comparable).
	Profile bool
}

// Measurement is one scenario against one target.
type Measurement struct {
	Scenario string  `json:"scenario"`
	Target   string  `json:"target"`
	Result   *Result `json:"result"`
	// RelayCPUSec is the CPU time of the process between client and mock
	// (for direct: the mock itself) during the load.
	RelayCPUSec float64 `json:"relay_cpu_s"`
	// CPUPerChunkUs is RelayCPUSec per content chunk delivered.
	CPUPerChunkUs float64 `json:"cpu_per_chunk_us"`
	// RelayPeakRSSMiB is the relay process's peak resident memory.
	RelayPeakRSSMiB float64 `json:"relay_peak_rss_mib"`
	// RelayStartRSSMiB is its resident memory just before the load: the
	// part of the peak that the streams did not add.
	RelayStartRSSMiB float64 `json:"relay_start_rss_mib"`
	MockCPUSec       float64 `json:"mock_cpu_s"`
	// RedisCommandsPerStream and RedisCPUPerStreamUs are, for the
	// Redis-backed target, the commands Redis ran and the CPU it spent
	// per completed stream.
	RedisCommandsPerStream float64 `json:"redis_commands_per_stream,omitempty"`
	RedisCPUPerStreamUs    float64 `json:"redis_cpu_per_stream_us,omitempty"`
	// Profile is the gateway's, in a profiling run.
	Profile *Profile `json:"profile,omitempty"`
	// Rounds are the figures of every round, when the scenario ran more
	// than one; the measurement itself is the median round.
	Rounds []Round `json:"rounds,omitempty"`
}

// Round is what one round of a scenario measured on a target.
type Round struct {
	CPUPerChunkUs float64 `json:"cpu_per_chunk_us"`
	ChunksPerSec  float64 `json:"chunks_per_s"`
	TTFTP50Us     float64 `json:"ttft_p50_us"`
}

// median returns the round of ms that is the median by the figure the
// scenario is judged on (time to first token one stream at a time, else
// CPU per chunk), with every round's figures attached.
func median(ms []*Measurement) *Measurement {
	if len(ms) == 1 {
		return ms[0]
	}
	key := func(m *Measurement) float64 {
		if m.Scenario == "latency" {
			return m.Result.TTFT.P50
		}
		return m.CPUPerChunkUs
	}
	out := *middle(ms, func(a, b *Measurement) int { return cmp.Compare(key(a), key(b)) })
	out.Rounds = nil
	for _, m := range ms {
		out.Rounds = append(out.Rounds, m.round())
	}
	return &out
}

// round is m's own figures as one round.
func (m *Measurement) round() Round {
	return Round{CPUPerChunkUs: m.CPUPerChunkUs, ChunksPerSec: m.Result.ChunksPerSec, TTFTP50Us: m.Result.TTFT.P50}
}

// paired compares g with b round by round: the median over rounds of
// f(g's round, b's round). Targets of one round ran within minutes of
// each other, so pairing them cancels most of a drift in the machine's
// speed that comparing two medians (of rounds run at different times)
// would keep. Without the same rounds on both, it is f of their rows.
func paired(g, b *Measurement, f func(g, b Round) float64) float64 {
	if len(g.Rounds) < 2 || len(g.Rounds) != len(b.Rounds) {
		return f(g.round(), b.round())
	}
	vs := make([]float64, len(g.Rounds))
	for i := range g.Rounds {
		vs[i] = f(g.Rounds[i], b.Rounds[i])
	}
	return middle(vs, cmp.Compare[float64])
}

// middle returns the median of xs by cmp (the lower of the two middle
// ones for an even count), leaving xs in its order.
func middle[T any](xs []T, cmp func(a, b T) int) T {
	sorted := slices.Clone(xs)
	slices.SortStableFunc(sorted, cmp)
	return sorted[(len(sorted)-1)/2]
}

// Run runs every scenario against every target.
func (r *Runner) Run(ctx context.Context) (*Report, error) {
	limit, err := RaiseFileLimit()
	if err != nil {
		return nil, err
	}
	rep := &Report{Machine: describeMachine(limit), Started: time.Now().UTC(), Scenarios: r.Scenarios}
	targets := Targets
	if r.Profile {
		targets = ProfileTargets
	}
	for _, sc := range r.Scenarios {
		rounds := max(sc.Rounds, 1)
		if r.Profile {
			rounds = 1 // profiles are read, not compared
		}
		byTarget := map[string][]*Measurement{}
		for round := 1; round <= rounds; round++ {
			for _, target := range targets {
				name := sc.Name
				if rounds > 1 {
					name = fmt.Sprintf("%s %d/%d", sc.Name, round, rounds)
				}
				fmt.Fprintf(r.Log, "%-14s %-15s ", name, target)
				m, err := r.measure(ctx, sc, target)
				if errors.Is(err, errNoRedis) {
					fmt.Fprintf(r.Log, "skipped: %v\n", err)
					continue
				}
				if err != nil {
					fmt.Fprintln(r.Log, "failed")
					return rep, fmt.Errorf("%s against %s: %w", sc.Name, target, err)
				}
				res := m.Result
				fmt.Fprintf(r.Log, "%6d ok %4d err %9.0f chunks/s  ttft p50 %8.0fµs  cpu/chunk %6.2fµs  rss %6.1fMiB",
					res.Streams, res.Errors, res.ChunksPerSec, res.TTFT.P50, m.CPUPerChunkUs, m.RelayPeakRSSMiB)
				if m.RedisCommandsPerStream > 0 {
					fmt.Fprintf(r.Log, "  redis %.1f cmds, %.0fµs cpu per stream", m.RedisCommandsPerStream, m.RedisCPUPerStreamUs)
				}
				fmt.Fprintln(r.Log)
				byTarget[target] = append(byTarget[target], m)
			}
		}
		for _, target := range targets {
			if ms := byTarget[target]; len(ms) > 0 {
				rep.Measurements = append(rep.Measurements, *median(ms))
			}
		}
	}
	if !r.Profile {
		rep.Checks = checkTargets(rep)
	}
	return rep, nil
}

func (r *Runner) measure(ctx context.Context, sc Scenario, target string) (*Measurement, error) {
	mock, err := r.start(ctx, "mock", r.BenchBin, "mock", "-listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// A closure: the direct h2c case below replaces mock.
	defer func() { mock.stop() }()
	mockURL := "http://" + mock.addr

	relay := mock
	var rds *redisServer // for the Redis-backed target
	var pprofAddr string // the gateway's profiler, in a profiling run
	load := Load{Format: FormatChat, Model: "bench", Tokens: sc.Tokens, Delay: sc.Delay, Concurrency: sc.Concurrency,
		Requests: sc.Requests, Duration: sc.Duration, RampUp: sc.RampUp, H2C: sc.H2C, Key: benchKey}
	h2c := fmt.Sprintf("-h2c=%v", sc.H2C)
	switch target {
	case TargetDirect:
		if sc.H2C { // the mock must accept h2c itself
			mock.stop()
			if mock, err = r.start(ctx, "mock", r.BenchBin, "mock", "-listen", "127.0.0.1:0", h2c); err != nil {
				return nil, err
			}
			relay = mock
		}
		load.URL = "http://" + mock.addr + "/v1/chat/completions"
	case TargetBaseline:
		if relay, err = r.start(ctx, "baseline", r.BenchBin, "baseline", "-listen", "127.0.0.1:0", "-upstream", mockURL, h2c); err != nil {
			return nil, err
		}
		defer relay.stop()
		load.URL = "http://" + relay.addr + "/v1/chat/completions"
	case TargetGatewayNative, TargetGatewayNativeRedis, TargetGatewayChat, TargetGatewayChatLedger, TargetGatewayChatTraced, TargetGatewayMessages, TargetGatewayResponses:
		cfg := filepath.Join(r.WorkDir, "gateway.yaml")
		yaml := gatewayConfig(mockURL, sc.H2C)
		if target == TargetGatewayChatLedger {
			db := filepath.Join(r.WorkDir, "usage.db")
			for _, suffix := range []string{"", "-wal", "-shm"} {
				_ = os.Remove(db + suffix) // each measurement starts empty
			}
			yaml += ledgerConfig(db)
		}
		if target == TargetGatewayChatTraced {
			col, err := startCollector()
			if err != nil {
				return nil, err
			}
			defer col.Close()
			yaml += tracingConfig(col.URL)
		}
		if target == TargetGatewayNativeRedis {
			if rds, err = startRedis(); err != nil {
				return nil, err
			}
			defer rds.Stop()
			yaml += redisConfig(rds.Addr)
		}
		if r.Profile {
			if pprofAddr, err = freeAddr(); err != nil {
				return nil, err
			}
			yaml = strings.Replace(yaml, "server:\n", "server:\n  pprof_listen: "+pprofAddr+"\n", 1)
		}
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			return nil, err
		}
		if relay, err = r.start(ctx, "gateway", r.GatewayBin, "-config", cfg); err != nil {
			return nil, err
		}
		defer relay.stop()
		load.URL = "http://" + relay.addr + "/v1/chat/completions"
		switch target {
		case TargetGatewayNative, TargetGatewayNativeRedis:
			load.URL, load.Format = "http://"+relay.addr+"/v1/stream", FormatNative
		case TargetGatewayMessages:
			load.URL, load.Format = "http://"+relay.addr+"/v1/messages", FormatMessages
		case TargetGatewayResponses:
			load.URL, load.Format = "http://"+relay.addr+"/v1/responses", FormatResponses
		}
	}

	relayRSS0, err := startRSS(relay.pid())
	if err != nil {
		return nil, err
	}
	relayCPU0, err := cpuTime(relay.pid())
	if err != nil {
		return nil, err
	}
	mockCPU0, _ := cpuTime(mock.pid())
	var redisCmds0 int64
	var redisCPU0 time.Duration
	if rds != nil {
		if redisCmds0, err = rds.Commands(ctx); err != nil {
			return nil, err
		}
		redisCPU0, _ = cpuTime(rds.pid())
	}
	var cpuProf <-chan profileResult
	if pprofAddr != "" {
		cpuProf = cpuDuring(ctx, pprofAddr, sc.RampUp+500*time.Millisecond)
	}
	res, err := Run(ctx, load)
	if err != nil {
		return nil, err
	}
	relayCPU1, err := cpuTime(relay.pid())
	if err != nil {
		return nil, err
	}
	mockCPU1, _ := cpuTime(mock.pid())
	rss, err := peakRSS(relay.pid())
	if err != nil {
		return nil, err
	}
	m := &Measurement{
		Scenario: sc.Name, Target: target, Result: res,
		RelayCPUSec:      (relayCPU1 - relayCPU0).Seconds(),
		MockCPUSec:       (mockCPU1 - mockCPU0).Seconds(),
		RelayPeakRSSMiB:  float64(rss) / (1 << 20),
		RelayStartRSSMiB: float64(relayRSS0) / (1 << 20),
	}
	if res.Chunks > 0 {
		m.CPUPerChunkUs = m.RelayCPUSec * 1e6 / float64(res.Chunks)
	}
	if cpuProf != nil {
		if m.Profile, err = collect(ctx, pprofAddr, cpuProf); err != nil {
			return nil, err
		}
	}
	if rds != nil && res.Streams > 0 {
		// Read before the gateway stops: its shutdown writes too.
		cmds, err := rds.Commands(ctx)
		if err != nil {
			return nil, err
		}
		redisCPU1, _ := cpuTime(rds.pid())
		m.RedisCommandsPerStream = float64(cmds-redisCmds0-1) / float64(res.Streams) // less the first INFO
		m.RedisCPUPerStreamUs = (redisCPU1 - redisCPU0).Seconds() * 1e6 / float64(res.Streams)
	}
	return m, nil
}

// benchKey is the gateway key the load sends: auth is on, as in
// production.
const benchKey = "sk-gw-bench-0123456789abcdef"

// gatewayConfig points the gateway's openai provider at the mock, so that
// the real go-openai path is measured, with everything a production
// gateway runs on: auth (a hashed key), the key's request, token and
// concurrency limits (set above what the load reaches: they are
// checked, never hit), metrics and access logs (to a file).
func gatewayConfig(mockURL string, h2c bool) string {
	return fmt.Sprintf(`auth: {enabled: true}
keys:
  bench:
    key_sha256: %s
    limits:
      requests_per_minute: 1000000
      tokens_per_minute: 1000000000
      concurrent_streams: 100000
server:
  listen: 127.0.0.1:0
  h2c: %v
  heartbeat_interval: 15s
  log:
    level: info
providers:
  mock-upstream:
    type: openai
    base_url: %s/v1
    api_key: bench
models:
  bench:
    routes:
      - provider: mock-upstream
        model: bench
`, config.Key{Key: benchKey}.Digest(), h2c, mockURL)
}

// ledgerConfig prices the bench model and records every request in a
// SQLite ledger at path, as the shipped config does.
func ledgerConfig(path string) string {
	return fmt.Sprintf(`prices:
  bench: {input: 0.15, output: 0.60}
ledger:
  backend: sqlite
  path: %s
`, path)
}

// tracingConfig traces every request to the OTLP/HTTP collector at url.
func tracingConfig(url string) string {
	return fmt.Sprintf(`tracing:
  enabled: true
  protocol: http/protobuf
  endpoint: %s
  sample_ratio: 1
`, url)
}

// process is a server started for one measurement.
type process struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// listenLine matches how both kinds of server announce their address:
// "listening on ADDR" (mock, baseline) and the gateway's
// msg="gateway listening" addr=ADDR.
var listenLine = regexp.MustCompile(`(?:listening on |gateway listening" addr=)(\S+)`)

// start runs a server and waits until it says where it listens. Its output
// goes to a log file in the work directory.
func (r *Runner) start(ctx context.Context, name, bin string, args ...string) (*process, error) {
	logf, err := os.Create(filepath.Join(r.WorkDir, name+".log"))
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		// Copy all output to the log; report the address once.
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if m := listenLine.FindStringSubmatch(line); m != nil && !found {
				found = true
				addr <- m[1]
			}
		}
		_, _ = io.Copy(logf, pr)
		logf.Close()
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	select {
	case p.addr = <-addr:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before listening; see %s", name, logf.Name())
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s did not start listening within 30s", name)
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

// stop asks the server to shut down and waits; it is safe to call twice.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Machine describes where a run happened.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGiB int    `json:"memory_gib"`
	Go        string `json:"go"`
	OS        string `json:"os"`
	FileLimit uint64 `json:"file_limit"`
}

func describeMachine(limit uint64) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, FileLimit: limit}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		m.MemoryGiB = int((uint64(si.Totalram)*uint64(si.Unit) + 1<<29) >> 30)
	}
	return m
}
