package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamgate/gateway/internal/redistest"
)

// redisStreamsConfig keeps streams in the Redis at addr, shared by every
// gateway built from it.
func redisStreamsConfig(g *gatedUpstream, addr string) string {
	return resumeConfig(g, fmt.Sprintf(`streams:
  backend: redis
  redis:
    addr: %s
  token_secret: test-secret-0123456789abcdef
  lease_ttl: 1s
  last_reader: continue
`, addr))
}

// TestResumeOnAnotherReplica: a stream produced on gateway A, whose client
// drops, is resumed on gateway B from Redis; the events equal the full
// replay on either gateway.
func TestResumeOnAnotherReplica(t *testing.T) {
	srv := redistest.Start(t)
	g := newGatedUpstream(t)
	a, b := newHarness(t, redisStreamsConfig(g, srv.Addr)), newHarness(t, redisStreamsConfig(g, srv.Addr))

	ctx, drop := context.WithCancel(context.Background())
	resp := a.post(t, ctx, "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	g.send("one", " two")
	got := events(t, newSSEReader(resp.Body), 3)
	_, resumeURL := connectedEvent(t, got[0])
	drop()
	resp.Body.Close()
	a.logs.waitFor(t, `"msg":"client left the stream"`)

	again := b.openEvents(t, context.Background(), resumeURL, "Last-Event-ID", got[2].ID)
	defer again.Body.Close()
	if again.StatusCode != http.StatusOK {
		t.Fatalf("resume on B: %d %s", again.StatusCode, drainClose(again))
	}
	g.send(" three")
	g.finish()
	got = append(got, rest(t, newSSEReader(again.Body))...)

	fromA, fromB := a.replay(t, resumeURL), b.replay(t, resumeURL)
	if render(got) != render(fromA) || render(fromB) != render(fromA) {
		t.Errorf("dropped on A, resumed on B:\n%s\nreplay on A:\n%s\nreplay on B:\n%s", render(got), render(fromA), render(fromB))
	}
	if last := decodeEvent(t, got[len(got)-1]); last.Type != "done" || len(got) != 5 {
		t.Errorf("%d events ending %+v", len(got), last)
	}
	if v := b.metric(t, "gateway_stream_resumes_total", "source", "redis"); v < 1 {
		t.Errorf("resumes from redis on B = %v", v)
	}
}

// TestDeleteOnAnotherReplica: DELETE on B stops the upstream of a stream
// produced on A, and A's reader gets the cancelled event.
func TestDeleteOnAnotherReplica(t *testing.T) {
	srv := redistest.Start(t)
	g := newGatedUpstream(t)
	a, b := newHarness(t, redisStreamsConfig(g, srv.Addr)), newHarness(t, redisStreamsConfig(g, srv.Addr))
	resp := a.post(t, context.Background(), "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	defer resp.Body.Close()
	sr := newSSEReader(resp.Body)
	g.send("partial")
	evs := events(t, sr, 2)
	_, resumeURL := connectedEvent(t, evs[0])

	del := b.do(t, context.Background(), http.MethodDelete, resumeURL, "", "")
	if body := drainClose(del); del.StatusCode != http.StatusOK || !strings.Contains(body, `"cancelled":true`) {
		t.Fatalf("DELETE on B: %d %s", del.StatusCode, body)
	}
	// A learns at its next lease renewal (a third of lease_ttl).
	g.waitCancelled(t)
	tail := rest(t, sr)
	if len(tail) != 1 || decodeEvent(t, tail[0]).Error == nil || decodeEvent(t, tail[0]).Error.Code != "cancelled" {
		t.Errorf("A's reader after DELETE on B: %s", render(tail))
	}
	fromB := b.replay(t, resumeURL)
	if e := decodeEvent(t, fromB[len(fromB)-1]); e.Error == nil || e.Error.Code != "cancelled" {
		t.Errorf("replay on B ends %s", fromB[len(fromB)-1].Data)
	}
}

// TestMirrorBatchesAppends: tokens that arrive apart (each read by the
// client before the next is sent) are written to Redis in batches, at
// most one write per streams.redis_write_interval, not one per token; the
// mirror still holds every event, as a replay on another replica shows.
func TestMirrorBatchesAppends(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"default 50ms", 0},
		{"10s", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
			defer rc.Close()
			g := newGatedUpstream(t)
			cfg, every := redisStreamsConfig(g, srv.Addr), 50*time.Millisecond
			if tc.interval > 0 {
				cfg = strings.Replace(cfg, "  lease_ttl: 1s\n", fmt.Sprintf("  lease_ttl: 1s\n  redis_write_interval: %s\n", tc.interval), 1)
				every = tc.interval
			}
			a, b := newHarness(t, cfg), newHarness(t, cfg)
			resp := a.post(t, context.Background(), "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
			defer resp.Body.Close()
			sr := newSSEReader(resp.Body)
			got := events(t, sr, 1)
			_, resumeURL := connectedEvent(t, got[0])

			before := scriptCalls(t, rc)
			start := time.Now()
			const tokens = 40
			for range tokens {
				g.send("x")
				got = append(got, events(t, sr, 1)...)
			}
			if tc.interval > 0 {
				waitHeldBack(t, rc, resumeURL)
			}
			g.finish()
			got = append(got, rest(t, newSSEReader(resp.Body))...)
			elapsed := time.Since(start)
			calls := scriptCalls(t, rc) - before - 1 // less the INFO before
			// Writes are the interval apart, after the opening event's
			// and plus the finish; lease renewals come every
			// lease_ttl/4 (250 ms) while nothing was written.
			if bound := int(elapsed/every) + int(elapsed/(250*time.Millisecond)) + 3; calls > bound || calls >= tokens {
				t.Errorf("%d scripts in Redis for %d tokens over %v (at most %d)", calls, tokens, elapsed, bound)
			}
			if fromB := b.replay(t, resumeURL); render(fromB) != render(got) {
				t.Errorf("replay from Redis on B:\n%s\nseen on A:\n%s", render(fromB), render(got))
			}
			// Every batch's lag is recorded once its producer has
			// ended. Held back past a lease renewal (250 ms), a batch's
			// lag says so.
			if err := a.srv.hub.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			n, sum := a.histogram(t, "gateway_stream_mirror_lag_seconds")
			if n < 1 || (tc.interval > 0 && sum < 0.25) {
				t.Errorf("mirror lag: %v batches, %.3fs in all", n, sum)
			}
		})
	}
}

// waitHeldBack checks that the stream at resumeURL has only its opening
// event in Redis once its producer has renewed its lease, which it does
// only when nothing was written for a quarter of it: the tokens since
// are held back for the next write, as a long redis_write_interval asks.
// (Redis is polled: the renewal has no other sign.)
func waitHeldBack(t *testing.T, rc *redis.Client, resumeURL string) {
	t.Helper()
	id, _, _ := strings.Cut(strings.TrimPrefix(resumeURL, "/v1/streams/"), "?")
	key := "sg:stream:{" + id + "}"
	ctx := context.Background()
	field := func(name string) string { return rc.HGet(ctx, key, name).Val() }
	deadline := time.Now().Add(10 * time.Second)
	poll := func(done func() bool) {
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("stream %s in Redis: last %s, lease %s", id, field("last"), field("lease"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	poll(func() bool { return field("last") != "0" }) // the opening event's write
	lease := field("lease")
	poll(func() bool { return field("lease") != lease })
	if last := field("last"); last != "1" {
		t.Errorf("events in Redis before the write interval ran out: last %s, want 1", last)
	}
}

// TestRelayDoesNotWaitForRedis: while Redis holds a write of the
// stream's events unanswered, the next tokens still reach the client:
// the writes run beside the relay, not in it. What queued behind the
// stalled write goes to Redis after it, so a replica replaying the stream
// from Redis has every event. (With the writes in the relay, the tokens
// waited for the held write to time out, a second later, and the stream
// then stopped being mirrored: B's replay came up short.)
func TestRelayDoesNotWaitForRedis(t *testing.T) {
	f := newStallFixture(t, func(cfg string) string { return cfg })
	for _, tok := range []string{" two", " three", " four"} {
		f.g.send(tok)
		f.got = append(f.got, events(t, f.sr, 1)...)
	}
	f.finish(t, 6)
}

// stallFixture is a stream produced on gateway A, whose Redis is behind a
// proxy that can stop passing commands on, and gateway B reading that
// Redis directly.
type stallFixture struct {
	a, b      *harness
	g         *gatedUpstream
	stall     *redistest.StallProxy
	sr        *sseReader
	got       []sseEvent // what A's client has read
	resumeURL string
}

// newStallFixture starts the stream (conf adjusts both gateways' config),
// stalls Redis, and returns once a write of the stream's first token (or
// its lease) is held there.
func newStallFixture(t *testing.T, conf func(string) string) *stallFixture {
	t.Helper()
	srv := redistest.Start(t)
	f := &stallFixture{stall: redistest.NewStallProxy(t, srv.Addr), g: newGatedUpstream(t)}
	f.a, f.b = newHarness(t, conf(redisStreamsConfig(f.g, f.stall.Addr))), newHarness(t, conf(redisStreamsConfig(f.g, srv.Addr)))
	resp := f.a.post(t, context.Background(), "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	t.Cleanup(func() { resp.Body.Close() })
	f.sr = newSSEReader(resp.Body)
	f.got = events(t, f.sr, 1)
	_, f.resumeURL = connectedEvent(t, f.got[0])
	held := f.stall.Stall()
	f.g.send("one")
	f.got = append(f.got, events(t, f.sr, 1)...)
	<-held
	return f
}

// finish lets Redis answer again and ends the answer; A's client must get
// n events ending with done, and a replay from Redis on B, once A's
// producer has ended, the same events.
func (f *stallFixture) finish(t *testing.T, n int) {
	t.Helper()
	f.stall.Release()
	f.g.finish()
	f.got = append(f.got, rest(t, f.sr)...)
	if last := decodeEvent(t, f.got[len(f.got)-1]); last.Type != "done" || len(f.got) != n {
		t.Fatalf("A's client got %d events ending %+v", len(f.got), last)
	}
	if err := f.a.srv.hub.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fromB := f.b.replay(t, f.resumeURL); render(fromB) != render(f.got) {
		t.Errorf("replay from Redis on B:\n%s\nseen on A:\n%s", render(fromB), render(f.got))
	}
}

// scriptCalls is how many scripts Redis has run (EVAL and EVALSHA).
func scriptCalls(t *testing.T, rc *redis.Client) int {
	t.Helper()
	info, err := rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				v, _, _ := strings.Cut(rest, ",")
				c, _ := strconv.Atoi(v)
				n += c
			}
		}
	}
	return n
}

// TestReaderOnAnotherReplicaHoldsTheStream: with last_reader cancel, a
// stream produced on A whose client leaves goes on while a reader follows
// it on B (A counts it in Redis), and is cancelled once that reader has
// left too (A's keeper counts again at its next visit).
func TestReaderOnAnotherReplicaHoldsTheStream(t *testing.T) {
	srv := redistest.Start(t)
	g := newGatedUpstream(t)
	cfg := strings.Replace(redisStreamsConfig(g, srv.Addr), "last_reader: continue", "last_reader: cancel", 1)
	a, b := newHarness(t, cfg), newHarness(t, cfg)
	ctxA, leaveA := context.WithCancel(context.Background())
	resp := a.post(t, ctxA, "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	defer resp.Body.Close()
	g.send("a")
	evs := events(t, newSSEReader(resp.Body), 2)
	_, resumeURL := connectedEvent(t, evs[0])

	ctxB, leaveB := context.WithCancel(context.Background())
	defer leaveB()
	follow := b.openEvents(t, ctxB, resumeURL)
	defer follow.Body.Close()
	fromB := newSSEReader(follow.Body)
	events(t, fromB, 2) // connected, "a"

	leaveA()
	// A finds its client gone at the next event, and asks Redis for
	// readers elsewhere before it writes the one after: while B reads,
	// every token still comes.
	for _, tok := range []string{"b", "c", "d"} {
		select {
		case g.steps <- tok:
		case <-g.cancelled:
			t.Fatalf("upstream cancelled before %q, with a reader on B", tok)
		}
		if e := decodeEvent(t, events(t, fromB, 1)[0]); e.Content != tok {
			t.Fatalf("B read %+v, want %q", e, tok)
		}
	}
	leaveB()
	g.waitCancelled(t)
}

// TestRedisLostMidStreamLeavesTheLocalPolicy: once Redis fails under a
// mirrored stream, its last-reader policy counts this replica's readers
// alone: the client leaving cancels the upstream (last_reader cancel).
func TestRedisLostMidStreamLeavesTheLocalPolicy(t *testing.T) {
	srv := redistest.Start(t)
	g := newGatedUpstream(t)
	cfg := strings.Replace(redisStreamsConfig(g, srv.Addr), "last_reader: continue", "last_reader: cancel", 1)
	a := newHarness(t, cfg)
	ctx, leave := context.WithCancel(context.Background())
	resp := a.post(t, ctx, "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	defer resp.Body.Close()
	sr := newSSEReader(resp.Body)
	g.send("a")
	events(t, sr, 2)
	srv.Stop()
	g.send("b") // its write to Redis fails (now or after leave below): the mirror stops
	events(t, sr, 1)
	leave()
	// The next token finds the client gone.
	select {
	case g.steps <- "c":
	case <-g.cancelled:
	}
	g.waitCancelled(t)
}

// TestMirrorRidesOutAStall: Redis stops answering for longer than a write
// may take (1 s); the write fails and goes again within the lease, with
// the tokens that came meanwhile, and once Redis answers the mirror holds
// every event once, as a replay on another replica shows. (Before, the
// first failure stopped the stream's mirror for good: B's replay ended
// short, with producer_lost once the lease ran out.) The held write may
// also reach Redis after it timed out: the retry names its first event,
// so Redis does not add those events twice.
func TestMirrorRidesOutAStall(t *testing.T) {
	f := newStallFixture(t, func(cfg string) string { return strings.Replace(cfg, "lease_ttl: 1s", "lease_ttl: 5s", 1) })
	// The held write times out, and is to go again.
	for deadline := time.Now().Add(10 * time.Second); f.a.metric(t, "gateway_stream_mirror_failures_total", "action", "retried") < 1; {
		if time.Now().After(deadline) {
			t.Fatalf("no retry; mirrors stopped: %v", f.a.metric(t, "gateway_stream_mirror_failures_total", "action", "stopped"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, tok := range []string{" two", " three"} {
		f.g.send(tok)
		f.got = append(f.got, events(t, f.sr, 1)...)
	}
	f.finish(t, 5)
	if n := f.a.metric(t, "gateway_stream_mirror_failures_total", "action", "stopped"); n != 0 {
		t.Errorf("%v mirrors stopped", n)
	}
}

// TestStreamRecordCreatedWhileTheUpstreamOpens: a stream's record in
// Redis is created while its upstream opens, not after: the upstream
// answers only once that creation is at Redis (held there by the proxy),
// so a gateway that created the record after the upstream's answer would
// never be answered. The round trip was otherwise part of every
// Redis-backed stream's time to first token. The stream then runs as any:
// B's replay from Redis equals what A's client got.
func TestStreamRecordCreatedWhileTheUpstreamOpens(t *testing.T) {
	srv := redistest.Start(t)
	stall := redistest.NewStallProxy(t, srv.Addr)
	var held <-chan struct{}
	answered := make(chan struct{})
	up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(answered)
		select {
		case <-held:
		case <-time.After(5 * time.Second):
			http.Error(w, `{"error":{"message":"no stream record was being created in Redis while the upstream opened","type":"server_error"}}`, http.StatusBadRequest)
			return
		}
		sseOK(w, roleChunk, helloChunk, stopChunk)
	})
	g := &gatedUpstream{url: up.URL}
	a, b := newHarness(t, redisStreamsConfig(g, stall.Addr)), newHarness(t, redisStreamsConfig(g, srv.Addr))
	held = stall.Stall()
	respc := make(chan *http.Response, 1)
	go func() { respc <- a.post(t, context.Background(), "/v1/stream", `{"model":"up-model","prompt":"hi"}`) }()
	<-answered
	stall.Release()
	resp := <-respc
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/stream: %d %s", resp.StatusCode, drainClose(resp))
	}
	got := rest(t, newSSEReader(resp.Body))
	if last := decodeEvent(t, got[len(got)-1]); last.Type != "done" || len(got) != 3 {
		t.Fatalf("A's client got %s", render(got))
	}
	_, resumeURL := connectedEvent(t, got[0])
	if err := a.srv.hub.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fromB := b.replay(t, resumeURL); render(fromB) != render(got) {
		t.Errorf("replay from Redis on B:\n%s\nseen on A:\n%s", render(fromB), render(got))
	}
}

// TestStreamRecordDroppedWhenTheUpstreamFails: the record created while
// the upstream opened is deleted when the upstream refuses the request
// (nobody ever learns the stream's id), instead of staying in Redis for
// the lease and the retention.
func TestStreamRecordDroppedWhenTheUpstreamFails(t *testing.T) {
	srv := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	up := rawUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":{"message":"bad prompt","type":"invalid_request_error"}}`, http.StatusBadRequest)
	})
	a := newHarness(t, redisStreamsConfig(&gatedUpstream{url: up.URL}, srv.Addr))
	resp := a.post(t, context.Background(), "/v1/stream", `{"model":"up-model","prompt":"hi"}`)
	if body := drainClose(resp); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("POST /v1/stream: %d %s", resp.StatusCode, body)
	}
	if err := a.srv.hub.Wait(context.Background()); err != nil { // the drop too
		t.Fatal(err)
	}
	if keys := rc.Keys(context.Background(), "sg:stream:*").Val(); len(keys) != 0 {
		t.Errorf("left in Redis: %v", keys)
	}
}
