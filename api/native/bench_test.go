package native

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/eventlog"
	"github.com/streamgate/gateway/internal/discard"
	"github.com/streamgate/gateway/middleware"
	"github.com/streamgate/gateway/outcome"
	"github.com/streamgate/gateway/providers"
	"github.com/streamgate/gateway/providers/mock"
	"github.com/streamgate/gateway/relay"
	"github.com/streamgate/gateway/resumable"
)

func BenchmarkNativeDeltaFrame(b *testing.B) {
	f := &format{requestID: "r", model: "m"}
	c := providers.Chunk{Content: " token"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Chunk(buf[:0], &c)
	}
}

type nopObserver struct{}

func (nopObserver) Resumed(string)          {}
func (nopObserver) Cancelled(string)        {}
func (nopObserver) ProducerLost()           {}
func (nopObserver) MirrorLag(time.Duration) {}
func (nopObserver) MirrorFailed(bool)       {}

// BenchmarkRelayPerToken streams one mock stream of b.N tokens in
// process, as POST /v1/stream runs it: a producer appending to the
// stream's log and writing to its primary connection. ns/op and allocs/op
// are per token, gateway side only.
func BenchmarkRelayPerToken(b *testing.B) {
	cfg := config.Default()
	hub := resumable.NewHub(cfg.Streams, resumable.HubOptions{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: nopObserver{}, Stopping: context.Background()})
	defer hub.Close()
	opts := mock.Defaults()
	opts.Tokens = b.N
	req := &providers.Request{Messages: []providers.Message{{Role: "user", Content: "hi"}}}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	st, err := mock.New(opts).StreamChat(ctx, req)
	if err != nil {
		b.Fatal(err)
	}
	var got relay.Outcome
	id := resumable.NewID()
	p := hub.Start(resumable.Stream{
		ID: id, Meta: eventlog.Meta{Model: "m"},
		Pump: relay.Pump{Stream: st.(relay.IdleStream), Format: &format{requestID: "r", model: "m", streamID: id}, Request: req, Start: time.Now()},
		Ctx:  ctx, Cancel: cancel, Release: func() {}, Policy: config.LastReaderCancel,
		Redact: func(s string) string { return s },
		OnEnd:  func(o relay.Outcome, _ *middleware.Info) { got = o },
	})
	out := relay.StartSSE(discard.New(), 15*time.Second, 0)
	defer out.Stop()
	b.ReportAllocs()
	b.ResetTimer()
	if !p.RunPrimary(context.Background(), out, false) {
		b.Fatal("the primary connection failed")
	}
	if got.End != outcome.Done || got.Usage.CompletionTokens != b.N {
		b.Fatalf("ended %v after %d tokens", got.End, got.Usage.CompletionTokens)
	}
}
