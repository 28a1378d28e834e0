// Package outcome names how a request's stream ended. The value is set
// once, where the ending is decided, and read by everything that depends
// on it: settling rate limits, metrics and the access log.
package outcome

// End is how a stream ended.
type End uint8

const (
	// None: the request did not stream, or has not ended yet.
	None End = iota
	// Done: the answer was complete and the client was told so.
	Done
	// ClientGone: the client left before the end.
	ClientGone
	// UpstreamError: the upstream failed, or was cut off by a timeout.
	UpstreamError
	// Shutdown: the server's drain time ran out.
	Shutdown
	// Cancelled: a resumable stream was cancelled (DELETE, or its last
	// reader left).
	Cancelled
	// StreamError: a reader of a resumable stream saw it end with an
	// error event.
	StreamError
)

var names = [...]string{None: "", Done: "done", ClientGone: "client_gone", UpstreamError: "upstream_error",
	Shutdown: "shutdown", Cancelled: "cancelled", StreamError: "stream_error"}

// String is the word logs and metrics use; "" for None.
func (e End) String() string {
	if int(e) < len(names) {
		return names[e]
	}
	return "unknown"
}

// Complete reports whether the upstream finished its answer.
func (e End) Complete() bool { return e == Done }
