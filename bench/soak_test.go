package bench

import "testing"

// TestCountIdle: idle offstack workers are told from busy ones and from
// everything else by their first frame outside the runtime (a profile as
// the gateway's /debug/pprof/goroutine?debug=1 writes it).
func TestCountIdle(t *testing.T) {
	const profile = `goroutine profile: total 50
41 @ 0x49050e 0x41ea2e 0x41e572 0x13e34e6 0x498741
#	0x13e34e5	github.com/streamgate/gateway/internal/offstack.(*worker).loop+0x45	/work/main/internal/offstack/offstack.go:73

2 @ 0x49050e 0x41ea2e 0x41e572 0x13e34e6 0x498741
#	0x48f6e4	internal/poll.runtime_pollWait+0x84	/usr/local/go/src/runtime/netpoll.go:351
#	0x13e3400	github.com/streamgate/gateway/internal/offstack.(*worker).call+0x20	/work/main/internal/offstack/offstack.go:90
#	0x13e34e5	github.com/streamgate/gateway/internal/offstack.(*worker).loop+0x45	/work/main/internal/offstack/offstack.go:73

3 @ 0x49050e 0x451597 0x498741
#	0x451596	runtime.gopark+0xd6	/usr/local/go/src/runtime/proc.go:460
#	0x13e34e5	github.com/streamgate/gateway/internal/offstack.(*worker).loop+0x45	/work/main/internal/offstack/offstack.go:73

1 @ 0x424fa9 0x492c78 0x5780f3 0x498741
#	0x492c77	os/signal.signal_recv+0x97	/usr/local/go/src/runtime/sigqueue.go:152
#	0x5780f2	os/signal.loop+0x12		/usr/local/go/src/os/signal/signal_unix.go:23
`
	if got := countIdle(profile); got != 44 {
		t.Errorf("countIdle = %v, want 44 (41 + 3 waiting, not the 2 busy nor the rest)", got)
	}
}
