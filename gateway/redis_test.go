package gateway

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/internal/offstack"
	"github.com/streamgate/gateway/internal/redistest"
)

// redisKeysConfig is keysConfig with the limiter in Redis.
func redisKeysConfig(addr, limits, failureMode string) string {
	return keysConfig(limits) + fmt.Sprintf(`rate_limit:
  backend: redis
  redis:
    addr: %s
  failure_mode: %s
  lease_ttl: 1s
`, addr, failureMode)
}

// TestRedisTwoGatewaysShareAKey: a burst of 5 for one key, 20 requests at
// once split over two gateway instances: exactly 5 pass.
func TestRedisTwoGatewaysShareAKey(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisKeysConfig(srv.Addr, "      requests_per_minute: 60\n      burst: 5", "fail_closed")
	both := []*harness{newHarness(t, cfg), newHarness(t, cfg)}
	statuses := countStatuses(fireAtOnce(t, 20, func(i int) *harness { return both[i%2] }))
	if statuses[200] != 5 || statuses[429] != 15 {
		t.Errorf("statuses %v across two gateways, want 5×200 and 15×429", statuses)
	}
}

func TestRedisFailClosedAndRecovery(t *testing.T) {
	srv := redistest.Start(t)
	h := newHarness(t, redisKeysConfig(srv.Addr, "      requests_per_minute: 600", "fail_closed"))
	drainClose(h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody))
	srv.Stop()
	resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
	if resp.StatusCode != 503 {
		t.Fatalf("fail_closed with Redis down: %d", resp.StatusCode)
	}
	if eb := readError(t, resp); eb.Error.Code != "rate_limiter_unavailable" {
		t.Errorf("code %q", eb.Error.Code)
	}
	h.logs.waitFor(t, "redis unavailable")
	srv.Restart()
	if resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody); resp.StatusCode != 200 {
		t.Errorf("not recovered after Redis came back: %d %s", resp.StatusCode, drainClose(resp))
	} else {
		drainClose(resp)
	}
}

func TestRedisFailOpen(t *testing.T) {
	srv := redistest.Start(t)
	h := newHarness(t, redisKeysConfig(srv.Addr, "      requests_per_minute: 600", "fail_open"))
	srv.Stop()
	resp := h.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
	if body := drainClose(resp); resp.StatusCode != 200 || !strings.Contains(body, `"type":"done"`) {
		t.Errorf("fail_open with Redis down: %d %s", resp.StatusCode, body)
	}
}

// TestRedisSlotOfKilledGatewayExpires runs a gateway process holding the
// key's only stream slot, kills it with SIGKILL, and checks that another
// gateway can use the slot within the lease TTL.
func TestRedisSlotOfKilledGatewayExpires(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway binary; skipped with -short")
	}
	srv := redistest.Start(t)
	cfg := redisKeysConfig(srv.Addr, "      concurrent_streams: 1", "fail_closed")
	dir := t.TempDir()
	bin := filepath.Join(dir, "gateway")
	build := exec.Command("go", "build", "-o", bin, "../cmd/gateway")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := exec.Command(bin, "-config", cfgPath, "-listen", addr)
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = proc.Wait(); close(exited) }()
	t.Cleanup(func() { _ = proc.Process.Kill(); <-exited })

	// Hold the slot through the subprocess with a stream that never ends.
	var held bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 200 && !held; i++ {
		req, _ := newStreamRequest(ctx, "http://"+addr, frontendKey, `{"model":"mock-gpt","prompt":"[mock stall_after=0]"}`)
		resp, err := httpClientNoKeepAlive.Do(req)
		if err != nil {
			time.Sleep(20 * time.Millisecond) // the process is starting
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("stream through the subprocess: %d", resp.StatusCode)
		}
		if _, err := newSSEReader(resp.Body).next(); err != nil {
			t.Fatal(err)
		}
		held = true
	}
	if !held {
		t.Fatal("the gateway process never answered")
	}
	other := newHarness(t, cfg)
	if resp := other.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody); resp.StatusCode != 429 {
		t.Fatalf("slot held by a live gateway was given out: %d", resp.StatusCode)
	} else {
		drainClose(resp)
	}

	_ = proc.Process.Kill() // SIGKILL: no release, no renewal
	<-exited
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := other.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
		drainClose(resp)
		if resp.StatusCode == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed gateway's slot was not freed within the lease TTL (1s): %d", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRedisTLS: with tls and the server's CA the gateway talks to a
// TLS-only Redis; trusting only the system's roots, it cannot, and
// fail_closed refuses requests.
func TestRedisTLS(t *testing.T) {
	srv := redistest.StartTLS(t)
	base := redisKeysConfig(srv.Addr, "      requests_per_minute: 600", "fail_closed")
	addr := "    addr: " + srv.Addr + "\n"
	trusted := newHarness(t, strings.Replace(base, addr, addr+"    tls: true\n    tls_ca_file: "+srv.CAFile+"\n", 1))
	resp := trusted.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
	if body := drainClose(resp); resp.StatusCode != 200 {
		t.Errorf("over TLS with the CA: %d %s", resp.StatusCode, body)
	}
	untrusted := newHarness(t, strings.Replace(base, addr, addr+"    tls: true\n", 1))
	resp = untrusted.do(t, context.Background(), "POST", "/v1/stream", frontendKey, streamBody)
	if drainClose(resp); resp.StatusCode != 503 {
		t.Errorf("over TLS without trusting the certificate: %d", resp.StatusCode)
	}
}

// stackHook records, for each command and pipeline, whether it ran on a
// goroutine offstack started.
type stackHook struct{ offstack []bool }

func (h *stackHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stackHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.record()
		return next(ctx, cmd)
	}
}

func (h *stackHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.record()
		return next(ctx, cmds)
	}
}

func (h *stackHook) record() {
	buf := make([]byte, 64<<10)
	h.offstack = append(h.offstack, strings.Contains(string(buf[:runtime.Stack(buf, false)]), "internal/offstack.(*worker).call"))
}

// TestRedisCommandsRunOffTheCallersStack: every command and pipeline of
// the gateway's Redis clients runs on a goroutine of its own, so that a
// stream's handler calling Redis keeps its small stack; but not those
// sent from a goroutine that is one already (offstack.Here).
func TestRedisCommandsRunOffTheCallersStack(t *testing.T) {
	srv := redistest.Start(t)
	c, err := newRedisClient(config.Redis{Addr: config.EnvString(srv.Addr)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := &stackHook{}
	c.AddHook(h) // inside the gateway's: it sees where commands run
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "k"); p.Del(ctx, "k"); return nil }); err != nil {
		t.Fatal(err)
	}
	// go-redis adds its own on a new connection (HELLO, CLIENT SETINFO).
	if len(h.offstack) < 2 || slices.Contains(h.offstack, false) {
		t.Errorf("commands and pipelines ran off the caller's stack: %v, want all true", h.offstack)
	}
	// Under offstack.Here (a goroutine of the work's own) they run where
	// they are called.
	h.offstack = nil
	here := offstack.Here(ctx)
	if err := c.Set(here, "k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pipelined(here, func(p redis.Pipeliner) error { p.Get(here, "k"); p.Del(here, "k"); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(h.offstack) != 2 || slices.Contains(h.offstack, true) {
		t.Errorf("under offstack.Here, commands and pipelines ran off the caller's stack: %v, want all false", h.offstack)
	}
}

// batchHook holds the first INCR that reaches the network until release
// is closed, and records how many INCRs each dispatch carried.
type batchHook struct {
	held    chan struct{} // closed when the first INCR is held
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	sizes   []int
}

func (h *batchHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *batchHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.dispatch([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (h *batchHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.dispatch(cmds)
		return next(ctx, cmds)
	}
}

func (h *batchHook) dispatch(cmds []redis.Cmder) {
	n := 0
	for _, c := range cmds {
		if c.Name() == "incr" {
			n++
		}
	}
	if n == 0 {
		return // go-redis's own on a new connection (HELLO, CLIENT SETINFO)
	}
	h.mu.Lock()
	h.sizes = append(h.sizes, n)
	h.mu.Unlock()
	h.once.Do(func() { close(h.held); <-h.release })
}

// TestPipelinedClientBatches: commands sent while one is in flight go
// out together, as one pipeline, and each gets its own reply.
func TestPipelinedClientBatches(t *testing.T) {
	srv := redistest.Start(t)
	c, err := newPipelinedClient(config.Redis{Addr: config.EnvString(srv.Addr)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := &batchHook{held: make(chan struct{}), release: make(chan struct{})}
	c.AddHook(h)
	ctx := context.Background()
	const queued = 20
	replies := make(chan int64, queued+1)
	incr := func() {
		n, err := c.Incr(ctx, "n").Result()
		if err != nil {
			t.Error(err)
		}
		replies <- n
	}
	go incr()
	<-h.held
	for range queued {
		go incr()
	}
	// Wait until every INCR is queued: each of their goroutines waits
	// inside go-redis for its reply.
	for deadline := time.Now().Add(10 * time.Second); waitingInRedis("TestPipelinedClientBatches") < queued; runtime.Gosched() {
		if time.Now().After(deadline) {
			close(h.release)
			t.Fatalf("%d of %d commands queued", waitingInRedis("TestPipelinedClientBatches"), queued)
		}
	}
	close(h.release)
	var got []int64
	for range queued + 1 {
		got = append(got, <-replies)
	}
	slices.Sort(got)
	for i, n := range got {
		if n != int64(i+1) {
			t.Fatalf("replies %v, want 1 to %d once each", got, queued+1)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t.Logf("INCRs per round trip: %v", h.sizes)
	// go-redis may take some of the queue into a batch of their own
	// while the first is held: the rest follow in the next.
	if len(h.sizes) > 3 || h.sizes[0] != 1 {
		t.Errorf("INCRs per round trip: %v, want the first alone and the %d queued in one or two", h.sizes, queued)
	}
}

// waitingInRedis counts the goroutines started by test that wait, parked,
// inside go-redis.
func waitingInRedis(test string) int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(g, "gateway."+test+".func") && strings.Contains(g, "github.com/redis/go-redis/v9") &&
			!strings.Contains(head, "running") && !strings.Contains(head, "runnable") {
			n++
		}
	}
	return n
}
