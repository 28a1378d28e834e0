package resumable

import "sync"

// mirrorWriters is how many goroutines of a process write streams' events
// to Redis. More in flight would not make Redis, one thread, write them
// sooner: they would queue there, ahead of the admissions, stream
// creations and resumes that requests wait for. A producer waiting its
// turn sends what arrives meanwhile with the rest, so while Redis is the
// bottleneck its writes get fewer and larger; and a waiting producer is
// an entry in a queue, not a goroutine with a stack.
const mirrorWriters = 16

// writeQueue hands producers with events to write to its writers, in the
// order they became due. A producer is queued at most once at a time
// (Producer.mstate).
type writeQueue struct {
	mu     sync.Mutex
	ready  sync.Cond
	q      []*Producer
	closed bool
	wg     sync.WaitGroup
}

func newWriteQueue(writers int) *writeQueue {
	w := &writeQueue{}
	w.ready.L = &w.mu
	w.wg.Add(writers)
	for range writers {
		go w.run()
	}
	return w
}

func (w *writeQueue) push(p *Producer) {
	w.mu.Lock()
	w.q = append(w.q, p)
	w.mu.Unlock()
	w.ready.Signal()
}

func (w *writeQueue) run() {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		for len(w.q) == 0 && !w.closed {
			w.ready.Wait()
		}
		if len(w.q) == 0 {
			w.mu.Unlock()
			return
		}
		p := w.q[0]
		w.q[0] = nil
		w.q = w.q[1:]
		w.mu.Unlock()
		p.writeMirror()
	}
}

// close stops the writers once the queue is empty.
func (w *writeQueue) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.ready.Broadcast()
	w.wg.Wait()
}
