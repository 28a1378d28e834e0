// Package serverwait waits for a server a test started (redis-server,
// postgres) to answer, or to fail.
package serverwait

import (
	"context"
	"fmt"
	"time"
)

// Up pings every poll until ping succeeds, the process exits (exited is
// closed) or within passes; name is the server's, for the error.
func Up(name string, exited <-chan struct{}, within, poll time.Duration, ping func(context.Context) error) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start: %w", name, err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %s: %w", name, within, err)
		}
		// A process starting up: there is nothing to wait on but time.
		time.Sleep(poll)
	}
}
