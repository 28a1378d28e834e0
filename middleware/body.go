package middleware

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/semaphore"

	"github.com/streamgate/gateway/failure"
)

// Bodies bounds what reading request bodies can cost: a body's size
// (413), the time to read it (a client that trickles its body is cut off,
// 408), and the memory all bodies being read hold together (503 while the
// budget is spent), so that slow clients cannot pile up connections with
// a megabyte each.
type Bodies struct {
	// budget is shared by every generation of the process.
	budget      *semaphore.Weighted
	budgetBytes int64
}

// NewBodies returns a budget of n bytes for bodies being read.
func NewBodies(n int64) *Bodies { return &Bodies{budget: semaphore.NewWeighted(n), budgetBytes: n} }

// Limit caps bodies at max bytes and their reading at timeout (0: no
// limit). A body of unknown length is charged max against the budget
// until it has been read.
func (b *Bodies) Limit(max int64, timeout time.Duration) gin.HandlerFunc {
	return func(c *gin.Context) {
		r := c.Request
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			c.Next()
			return
		}
		if r.ContentLength > max {
			c.Header("Connection", "close")
			refuse(c, &failure.Error{Status: http.StatusRequestEntityTooLarge, Type: failure.TypeInvalidRequest, Code: "request_too_large",
				Message: fmt.Sprintf("request body is larger than the limit of %d bytes", max)})
			return
		}
		weight := max
		if r.ContentLength > 0 {
			weight = r.ContentLength
		}
		weight = min(weight, b.budgetBytes)
		if !b.budget.TryAcquire(weight) {
			c.Header("Retry-After", "1")
			refuse(c, &failure.Error{Status: http.StatusServiceUnavailable, Type: failure.TypeServer, Code: "server_busy",
				Message: "the gateway is reading as many request bodies as its memory budget allows; retry in a moment"})
			return
		}
		rc := http.NewResponseController(c.Writer)
		if timeout > 0 {
			// Writers that cannot take deadlines (tests) go without.
			_ = rc.SetReadDeadline(time.Now().Add(timeout))
		}
		// Once the whole body is in, the connection is read only to
		// notice the client leaving: that must not time out (lift). A
		// body that failed keeps its deadline, so that net/http's
		// reading of the rest after the handler (to reuse the
		// connection) gives up too.
		body := &boundedBody{r: http.MaxBytesReader(c.Writer, r.Body, max), budget: b.budget, weight: weight, rc: rc, lift: timeout > 0}
		r.Body = body
		defer body.release()
		c.Next()
	}
}

// boundedBody gives its weight back to the budget once it has been read
// to the end (or failed), and then lifts its read deadline if asked to
// and it was read whole. (Fields, not closures: a request's body costs
// one allocation here.)
type boundedBody struct {
	r        io.ReadCloser
	budget   *semaphore.Weighted
	weight   int64
	released atomic.Bool
	rc       *http.ResponseController
	lift     bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.release()
		if err == io.EOF && b.lift {
			b.lift = false
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

// release gives the body's weight back, once.
func (b *boundedBody) release() {
	if b.released.CompareAndSwap(false, true) {
		b.budget.Release(b.weight)
	}
}

func (b *boundedBody) Close() error { return b.r.Close() }
