package upstream

import (
	"context"

	"github.com/streamgate/gateway/internal/offstack"
	"github.com/streamgate/gateway/providers"
)

// streamChat opens a stream of p off the request's stack: encoding the
// upstream's request and net/http's round trip would take it well past
// the 8 KiB an idle stream's handler needs (see package offstack). It
// returns once StreamChat does, which is promptly once ctx is done.
func streamChat(ctx context.Context, p providers.Provider, req *providers.Request) (st providers.Stream, err error) {
	offstack.Run(func() { st, err = p.StreamChat(ctx, req) })
	return st, err
}
