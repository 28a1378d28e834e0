package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/streamgate/gateway/internal/offstack"
)

// Soak runs the gateway binary for a while under many concurrent streams
// against an upstream that misbehaves in every way the gateway must
// survive, with clients that read, abort, or stop reading, and checks
// what must hold whatever happens: every stream read to its end has
// exactly one terminal event, never a success after a broken answer; no
// upstream request runs on after its client left; goroutines and memory
// return to where they were.
type Soak struct {
	GatewayBin  string
	WorkDir     string // the gateway's config and log go here
	Concurrency int
	Duration    time.Duration
	Log         io.Writer
}

// SoakReport is what a soak found. The fields named Violations... must be
// zero.
type SoakReport struct {
	Concurrency int     `json:"concurrency"`
	DurationSec float64 `json:"duration_s"`
	Streams     int     `json:"streams"`
	// By what the client did: read to the end, aborted after a few
	// events, or stopped reading with the connection open.
	Read, Aborted, StoppedReading int
	// Refused before the stream opened (an HTTP error status): the
	// answer's one ending.
	Refused int `json:"refused"`
	// Endings of the streams read to their end, by terminal event.
	Done, Errors int
	// Faults the upstream was asked for, by kind.
	Faults map[string]int `json:"faults"`
	// ErrorCodes of the error events clients saw.
	ErrorCodes map[string]int `json:"error_codes"`

	// ViolationsTerminal: streams read to their end without exactly one
	// terminal event (none, or more than one, or one that never came).
	ViolationsTerminal int `json:"violations_terminal"`
	// ViolationsDoneAfterFault: done (or [DONE]) after the upstream broke
	// the answer mid-stream.
	ViolationsDoneAfterFault int `json:"violations_done_after_fault"`
	// ViolationsUpstreamAfterClient: upstream requests still running
	// more than UpstreamGrace after their client left.
	ViolationsUpstreamAfterClient int `json:"violations_upstream_after_client"`
	// UpstreamEndAfterAbortMs is the time from a client's leaving to its
	// upstream request ending: median, 99th percentile and longest, over
	// the clients that aborted while their upstream still ran.
	UpstreamEndAfterAbortMs struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"upstream_end_after_abort_ms"`
	// UpstreamInFlightAfter is how many upstream requests were still
	// running once every client had finished.
	UpstreamInFlightAfter int64 `json:"upstream_in_flight_after"`

	Goroutines Samples `json:"goroutines"`
	// IdleWorkers are offstack's workers waiting for work, counted in
	// Goroutines: the package keeps up to 64, as many as the load ran at
	// once, and that is not a leak.
	IdleWorkers  Samples `json:"offstack_idle_workers"`
	RSSMiB       Samples `json:"rss_mib"`
	HeapInuseMiB Samples `json:"heap_inuse_mib"`
	// ViolationsGoroutines is how many goroutines more than before the
	// gateway has after the soak, idle workers left out (a small slack
	// allowed).
	ViolationsGoroutines int `json:"violations_goroutines"`
	// ViolationsHeapMiB is how much more live heap than before the
	// gateway holds after the soak, past a 16 MiB slack.
	ViolationsHeapMiB int `json:"violations_heap_mib"`

	Samples []string `json:"violation_samples,omitempty"`
}

// Violations counts everything that must not happen.
func (rep *SoakReport) Violations() int {
	return rep.ViolationsTerminal + rep.ViolationsDoneAfterFault + rep.ViolationsUpstreamAfterClient + rep.ViolationsGoroutines + rep.ViolationsHeapMiB
}

// Samples are a gauge before, at its highest during, and after a run.
type Samples struct {
	Before float64 `json:"before"`
	Peak   float64 `json:"peak"`
	After  float64 `json:"after"`
}

// soakTokenDelay paces the upstream's tokens at 50 a second, a fast real
// model's rate: faster, 300 streams saturate two cores, and what the soak
// then measures is the machine's scheduling, not the gateway.
const soakTokenDelay = 20 * time.Millisecond

// warmTruncated is a stream number the soak never reaches, whose fault is
// truncate and whose client reads it to the end.
const warmTruncated = 1_000_000_031

// UpstreamGrace is how soon after its client leaves an upstream request
// must have ended.
const UpstreamGrace = time.Second

// goroutineSlack is what the goroutine count may exceed its baseline by
// after the soak: idle keep-alive connections of the last clients that the
// server has not yet timed out.
const goroutineSlack = 8

// heapSlackMiB is what the live heap may exceed its baseline by after the
// soak: buffers of pooled connections, the limiter's and the metrics'
// state for what the soak touched.
const heapSlackMiB = 16

// The faults the soak's upstream plays, one per request. Those after the
// first token must end the client's stream with an error.
var (
	soakFaults      = []string{"ok", "ok", "reset", "stall", "malformed", "ratelimit", "inband", "truncate"}
	faultsMidStream = map[string]bool{"reset": true, "stall": true, "malformed": true, "inband": true, "truncate": true}
)

// Run runs the soak.
func (s *Soak) Run(ctx context.Context) (*SoakReport, error) {
	up := newFaultyUpstream()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	usrv := &http.Server{Handler: up, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = usrv.Serve(ln) }()
	defer usrv.Close()

	// The profiler's heap endpoint runs a garbage collection first
	// (?gc=1): memory is then sampled live, not with garbage not yet
	// collected.
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pprofAddr := pln.Addr().String()
	pln.Close()
	cfg := filepath.Join(s.WorkDir, "soak.yaml")
	if err := os.WriteFile(cfg, []byte(soakConfig("http://"+ln.Addr().String(), pprofAddr)), 0o600); err != nil {
		return nil, err
	}
	r := &Runner{WorkDir: s.WorkDir, Log: s.Log}
	gw, err := r.start(ctx, "gateway-soak", s.GatewayBin, "-config", cfg)
	if err != nil {
		return nil, err
	}
	defer gw.stop()
	base := "http://" + gw.addr

	tr := &http.Transport{MaxIdleConnsPerHost: s.Concurrency, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	// The baseline is a gateway that has served Concurrency streams at
	// once: its upstream connection pool is as full as it will be after
	// the soak, and idle pooled connections are not a leak.
	var warm sync.WaitGroup
	for i := range s.Concurrency {
		warm.Go(func() { soakStream(ctx, client, base, up, -(i+1)*len(soakFaults)) })
	}
	// And one truncated stream: its usage is counted, which loads the
	// tokenizer (some 30 MB, once per process).
	warm.Go(func() { soakStream(ctx, client, base, up, warmTruncated) })
	warm.Wait()
	tr.CloseIdleConnections()
	time.Sleep(time.Second) // the server notices the closed client connections

	rep := &SoakReport{Concurrency: s.Concurrency, Faults: map[string]int{}, ErrorCodes: map[string]int{}}
	collect := func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+"/debug/pprof/heap?gc=1", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	sample := func() (g, rss, heap float64, err error) {
		g, heap, err = gatewayGauges(ctx, base)
		if err != nil {
			return 0, 0, 0, err
		}
		kb, err := currentRSS(gw.pid())
		return g, float64(kb) / (1 << 20), heap / (1 << 20), err
	}
	collect()
	if rep.Goroutines.Before, rep.RSSMiB.Before, rep.HeapInuseMiB.Before, err = sample(); err != nil {
		return nil, err
	}
	if rep.IdleWorkers.Before, err = idleWorkers(ctx, pprofAddr); err != nil {
		return nil, err
	}

	// Sample while the clients run.
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
			if g, rss, heap, err := sample(); err == nil {
				rep.Goroutines.Peak = max(rep.Goroutines.Peak, g)
				rep.RSSMiB.Peak = max(rep.RSSMiB.Peak, rss)
				rep.HeapInuseMiB.Peak = max(rep.HeapInuseMiB.Peak, heap)
			}
		}
	}()

	start := time.Now()
	deadline := start.Add(s.Duration)
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range s.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				o := soakStream(ctx, client, base, up, int(next.Add(1)))
				mu.Lock()
				rep.add(o)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rep.DurationSec = time.Since(start).Seconds()
	tr.CloseIdleConnections()

	// Every client is done: the upstream must be idle at once, give or
	// take the grace of the last ones to leave.
	idle := time.Now().Add(2 * UpstreamGrace)
	for up.inflight.Load() > 0 && time.Now().Before(idle) {
		time.Sleep(10 * time.Millisecond)
	}
	rep.UpstreamInFlightAfter = up.inflight.Load()
	lags, late := up.lagsAfterAbort()
	rep.ViolationsUpstreamAfterClient = late
	if len(lags) > 0 {
		slices.Sort(lags)
		q := func(p float64) float64 { return float64(lags[int(p*float64(len(lags)-1))].Microseconds()) / 1000 }
		rep.UpstreamEndAfterAbortMs.P50, rep.UpstreamEndAfterAbortMs.P99, rep.UpstreamEndAfterAbortMs.Max = q(0.5), q(0.99), q(1)
	}
	if rep.UpstreamInFlightAfter > 0 {
		rep.ViolationsUpstreamAfterClient += int(rep.UpstreamInFlightAfter)
	}
	close(stopSampling)
	<-sampled
	// Closed client connections are noticed, and the streams' logs pass
	// their retention; then the gateway is back where it started.
	time.Sleep(3 * time.Second)
	collect()
	if rep.Goroutines.After, rep.RSSMiB.After, rep.HeapInuseMiB.After, err = sample(); err != nil {
		return nil, err
	}
	if rep.IdleWorkers.After, err = idleWorkers(ctx, pprofAddr); err != nil {
		return nil, err
	}
	if extra := int((rep.Goroutines.After - rep.IdleWorkers.After) - (rep.Goroutines.Before - rep.IdleWorkers.Before)); extra > goroutineSlack {
		rep.ViolationsGoroutines = extra
	}
	if extra := int(rep.HeapInuseMiB.After - rep.HeapInuseMiB.Before); extra > heapSlackMiB {
		rep.ViolationsHeapMiB = extra
	}
	return rep, ctx.Err()
}

// soakOutcome is what one client saw.
type soakOutcome struct {
	fault, behaviour       string
	status                 int
	done, errors           int
	hung                   bool
	codes                  []string
	violation, description string
}

func (rep *SoakReport) add(o soakOutcome) {
	rep.Streams++
	rep.Faults[o.fault]++
	switch o.behaviour {
	case "abort":
		rep.Aborted++
	case "stop":
		rep.StoppedReading++
	default:
		rep.Read++
	}
	for _, c := range o.codes {
		rep.ErrorCodes[c]++
	}
	if o.status != http.StatusOK {
		rep.Refused++
		return
	}
	if o.behaviour != "read" {
		return
	}
	rep.Done += o.done
	rep.Errors += o.errors
	switch {
	case o.hung || o.done+o.errors != 1:
		rep.ViolationsTerminal++
		o.violation = fmt.Sprintf("%d terminal events (hung %v)", o.done+o.errors, o.hung)
	case o.done == 1 && faultsMidStream[o.fault]:
		rep.ViolationsDoneAfterFault++
		o.violation = "done after a mid-stream fault"
	}
	if o.violation != "" && len(rep.Samples) < 10 {
		rep.Samples = append(rep.Samples, o.fault+": "+o.violation+": "+o.description)
	}
}

// soakStream runs the n-th stream: its fault, endpoint and client
// behaviour follow from n.
func soakStream(ctx context.Context, client *http.Client, base string, up *faultyUpstream, n int) soakOutcome {
	o := soakOutcome{fault: soakFaults[n%len(soakFaults)], behaviour: "read"}
	switch {
	case n%50 == 25:
		o.behaviour, o.fault = "stop", "big"
		client = stopClient
	case n%10 == 3, n%10 == 7:
		o.behaviour = "abort"
	}
	native := n%2 == 0
	prompt := fmt.Sprintf("soak [soak %s %d]", o.fault, n)
	var url, body string
	if native {
		url, body = base+"/v1/stream", fmt.Sprintf(`{"model":"soak","prompt":%q}`, prompt)
	} else {
		url, body = base+"/v1/chat/completions", fmt.Sprintf(`{"model":"soak","stream":true,"messages":[{"role":"user","content":%q}]}`, prompt)
	}
	// A stream that never ends is a violation, not a hang of the soak.
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		o.hung, o.description = sctx.Err() != nil, err.Error()
		if o.behaviour == "read" {
			o.status = http.StatusOK // counted: a stream read that never began
		}
		return o
	}
	defer resp.Body.Close()
	o.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return o
	}
	br := bufio.NewReader(resp.Body)
	events := 0
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			o.hung = sctx.Err() != nil
			o.description = fmt.Sprintf("after %d events: %v", events, err)
			return o
		}
		data, ok := bytes.CutPrefix(line, dataPrefix)
		if !ok {
			continue
		}
		events++
		switch {
		case bytes.HasPrefix(data, nativeDone), bytes.HasPrefix(data, chatDone):
			o.done++
		case bytes.HasPrefix(data, nativeError), bytes.HasPrefix(data, chatError):
			o.errors++
			o.codes = append(o.codes, errorCode(data))
		}
		if o.done+o.errors > 0 && o.behaviour == "read" {
			// Read on: a second terminal event would be a violation.
			rest, _ := io.ReadAll(br)
			o.done += bytes.Count(rest, []byte("data: "+string(nativeDone))) + bytes.Count(rest, []byte("data: [DONE]"))
			o.errors += bytes.Count(rest, []byte("data: "+string(nativeError))) + bytes.Count(rest, []byte("data: {\"error\""))
			return o
		}
		switch {
		case o.behaviour == "abort" && events >= 3:
			up.clientLeft(n)
			cancel()
			return o
		case o.behaviour == "stop" && events >= 2:
			// Hold the connection without reading: the gateway must give
			// up on writing to it (write_timeout) and end the upstream
			// request. One still running after 10 s counts as running
			// after its client left.
			select {
			case <-up.ended(n, 10*time.Second):
			case <-ctx.Done():
			}
			if !up.hasEnded(n) {
				up.clientLeft(n)
			}
			return o
		}
	}
}

// stopClient is the client of streams that stop reading: its sockets'
// receive buffers are small, so the gateway's writes block soon.
var stopClient = &http.Client{Transport: &http.Transport{
	DisableCompression: true,
	DialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}).DialContext,
}}

var codeField = regexp.MustCompile(`"code":"([a-z0-9_]+)"`)

func errorCode(data []byte) string {
	if m := codeField.FindSubmatch(data); m != nil {
		return string(m[1])
	}
	return "unknown"
}

// soakConfig serves model soak from the faulty upstream, with timeouts
// short enough for a soak: stalls end by idle_timeout, clients that stop
// reading by write_timeout.
func soakConfig(upstream, pprof string) string {
	return fmt.Sprintf(`auth: {enabled: false}
server:
  listen: 127.0.0.1:0
  pprof_listen: %s
  heartbeat_interval: 500ms
  write_timeout: 1s
  shutdown_timeout: 5s
  log: {level: info}
streams:
  # Finished streams' logs are kept this long for resuming: short, so
  # that memory after the soak shows what is retained by mistake.
  retention: 1s
retry:
  max_time: 2s
  backoff: 10ms
providers:
  faulty:
    type: openai
    base_url: %s/v1
    api_key: soak-key-0123456789
    first_token_timeout: 2s
    idle_timeout: 1s
    stream_timeout: 30s
models:
  soak:
    routes: [{provider: faulty, model: soak}]
`, pprof, upstream)
}

// gatewayGauges reads go_goroutines and go_memstats_heap_inuse_bytes
// from the gateway's /metrics.
func gatewayGauges(ctx context.Context, base string) (goroutines, heapInuse float64, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			goroutines, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			heapInuse, _ = strconv.ParseFloat(v, 64)
		}
	}
	return goroutines, heapInuse, sc.Err()
}

// idleWorkers counts the gateway's offstack workers waiting for work,
// from its goroutine profile.
func idleWorkers(ctx context.Context, pprofAddr string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+"/debug/pprof/goroutine?debug=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("goroutine profile: %w", err)
	}
	return countIdle(string(b)), nil
}

// countIdle counts, in a goroutine profile (debug=1: a "N @ pcs" line
// for each group of N goroutines with one stack, then a "#\tpc\tfunc+off
// file:line" line a frame, innermost first), the goroutines whose first
// frame outside the runtime is offstack.IdleWorker.
func countIdle(profile string) float64 {
	n, count, top := 0.0, 0.0, false
	for _, line := range strings.Split(profile, "\n") {
		if c, _, ok := strings.Cut(line, " @ "); ok {
			count, _ = strconv.ParseFloat(c, 64)
			top = true
			continue
		}
		f := strings.Fields(line)
		if !top || len(f) < 3 || f[0] != "#" {
			continue
		}
		fn, _, _ := strings.Cut(f[2], "+")
		if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/runtime/") {
			continue
		}
		if fn == offstack.IdleWorker {
			n += count
		}
		top = false
	}
	return n
}

// currentRSS is a process's resident memory now (VmRSS), in bytes.
func currentRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// faultyUpstream speaks OpenAI's streaming wire and breaks each answer as
// its prompt's "[soak FAULT N]" says, recording when each request began
// and ended.
type faultyUpstream struct {
	inflight atomic.Int64

	mu sync.Mutex
	// left is when request N's client left; end, when its upstream
	// request ended (the last attempt's); endCh wakes a waiter.
	left  map[int]time.Time
	end   map[int]time.Time
	endCh map[int]chan struct{}
	tries map[int]int
}

func newFaultyUpstream() *faultyUpstream {
	return &faultyUpstream{left: map[int]time.Time{}, end: map[int]time.Time{}, endCh: map[int]chan struct{}{}, tries: map[int]int{}}
}

var soakDirective = regexp.MustCompile(`\[soak ([a-z]+) (\d+)\]`)

func (u *faultyUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.inflight.Add(1)
	defer u.inflight.Add(-1)
	var body struct {
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	fault, n := "ok", 0
	if len(body.Messages) > 0 {
		if m := soakDirective.FindStringSubmatch(body.Messages[len(body.Messages)-1].Content); m != nil {
			fault = m[1]
			n, _ = strconv.Atoi(m[2])
		}
	}
	u.mu.Lock()
	u.tries[n]++
	try := u.tries[n]
	u.mu.Unlock()
	defer u.finish(n)

	if fault == "ratelimit" && try == 1 {
		w.Header().Set("Retry-After", "0")
		http.Error(w, `{"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}}`, http.StatusTooManyRequests)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	send := func(s string) bool {
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	chunk := func(content string) string {
		return `data: {"id":"s","object":"chat.completion.chunk","created":1,"model":"soak","choices":[{"index":0,"delta":{"content":` + strconv.Quote(content) + `},"finish_reason":null}]}` + "\n\n"
	}
	tokens, token := 24, "tok "
	if fault == "big" {
		// 8 MB: more than the gateway's socket buffer holds towards a
		// client that reads nothing, so its writes block.
		tokens, token = 8000, strings.Repeat("x", 1<<10)
	}
	for i := 0; i < tokens; i++ {
		if i == 5 && faultsMidStream[fault] {
			switch fault {
			case "reset":
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						if tc, ok := conn.(*net.TCPConn); ok {
							_ = tc.SetLinger(0) // RST, not FIN
						}
						conn.Close()
					}
				}
			case "stall":
				<-r.Context().Done()
			case "malformed":
				send("data: {\"id\":\"s\",\"choices\":[{\"delta\":{\"content\":\n\n")
				<-r.Context().Done() // the gateway gives up on it
			case "inband":
				send(`data: {"error":{"message":"quota exceeded","type":"insufficient_quota","code":"insufficient_quota"}}` + "\n\n")
			case "truncate":
			}
			return
		}
		if !send(chunk(token)) {
			return
		}
		if fault != "big" {
			select {
			case <-time.After(soakTokenDelay):
			case <-r.Context().Done():
				return
			}
		}
	}
	send(`data: {"id":"s","object":"chat.completion.chunk","created":1,"model":"soak","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":` + strconv.Itoa(tokens) + `,"total_tokens":` + strconv.Itoa(tokens+3) + `}}` + "\n\ndata: [DONE]\n\n")
}

func (u *faultyUpstream) finish(n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.end[n] = time.Now()
	if ch, ok := u.endCh[n]; ok {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
}

// hasEnded reports whether request n's upstream request has ended.
func (u *faultyUpstream) hasEnded(n int) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.end[n]
	return ok
}

// clientLeft records that request n's client left now.
func (u *faultyUpstream) clientLeft(n int) {
	u.mu.Lock()
	u.left[n] = time.Now()
	u.mu.Unlock()
}

// ended returns a channel closed once request n's upstream request has
// ended, or after timeout.
func (u *faultyUpstream) ended(n int, timeout time.Duration) <-chan struct{} {
	u.mu.Lock()
	ch, ok := u.endCh[n]
	if !ok {
		ch = make(chan struct{})
		u.endCh[n] = ch
		if _, done := u.end[n]; done {
			close(ch)
		}
	}
	u.mu.Unlock()
	out := make(chan struct{})
	go func() {
		defer close(out)
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		}
	}()
	return out
}

// lagsAfterAbort returns, for each client that left while its upstream
// request still ran, how long that request ran on; and how many ran on
// longer than UpstreamGrace (or never ended).
func (u *faultyUpstream) lagsAfterAbort() (lags []time.Duration, late int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for n, left := range u.left {
		end, ok := u.end[n]
		if !ok {
			late++
			continue
		}
		if lag := end.Sub(left); lag > 0 {
			lags = append(lags, lag)
			if lag > UpstreamGrace {
				late++
			}
		}
	}
	return lags, late
}
