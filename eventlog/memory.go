// Package eventlog keeps each stream's events in an append-only log, so
// that an answer outlives the connection that asked for it: one producer
// (the upstream reader) appends, and any number of readers follow the log
// from any point, live, until its terminal event.
//
// An event is one line of JSON. Events are numbered from 1 in the order
// they were appended; the numbers are the SSE ids clients resume from.
// Memory holds the logs of this process; Redis mirrors them so that any
// replica can serve a reader.
package eventlog

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrNotFound is a stream that never existed, or whose retention
	// ran out.
	ErrNotFound = errors.New("no such stream")
	// ErrExists is a Create with an id already in use.
	ErrExists = errors.New("stream id already in use")
	// ErrGap is a read from before the oldest event still held: the log
	// outgrew its bound and dropped its beginning.
	ErrGap = errors.New("the events asked for were dropped to bound memory")
)

// Meta is what a stream is about: who may read it, and what it serves.
type Meta struct {
	// Key is the name of the API key that started the stream, "" with
	// auth off.
	Key   string
	Model string
}

// MemoryOptions bound what a Memory holds.
type MemoryOptions struct {
	// MaxStreamBytes and MaxStreamEvents bound one log: past either, its
	// oldest events are dropped (readers that want them get ErrGap).
	MaxStreamBytes  int64
	MaxStreamEvents int
	// MaxTotalBytes bounds all logs: past it, finished logs are evicted
	// oldest first, and then the growing log drops its oldest events. A
	// live log keeps at least its newest event, so the total may exceed
	// the bound by one event per live stream.
	MaxTotalBytes int64
	// Retention is how long a finished log stays readable.
	Retention time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Memory holds this process's logs.
type Memory struct {
	opts  MemoryOptions
	total atomic.Int64 // bytes held by every log

	mu   sync.Mutex
	logs map[string]*Log
	// done are the finished logs, in the order they finished: retention
	// is the same for all, so this is also the order they expire in.
	done []*Log
}

// NewMemory returns an empty store.
func NewMemory(o MemoryOptions) *Memory {
	if o.Now == nil {
		o.Now = time.Now
	}
	// Zero bounds mean none.
	if o.MaxStreamBytes <= 0 {
		o.MaxStreamBytes = math.MaxInt64
	}
	if o.MaxStreamEvents <= 0 {
		o.MaxStreamEvents = math.MaxInt
	}
	if o.MaxTotalBytes <= 0 {
		o.MaxTotalBytes = math.MaxInt64
	}
	return &Memory{opts: o, logs: map[string]*Log{}}
}

// eventOverhead is what an event costs beyond its bytes: its end offset.
const eventOverhead = 8

// Create starts an empty log.
func (m *Memory) Create(id string, meta Meta) (*Log, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	if _, ok := m.logs[id]; ok {
		return nil, ErrExists
	}
	l := &Log{ID: id, Meta: meta, m: m, first: 1, wake: make(chan struct{})}
	m.logs[id] = l
	return l, nil
}

// Get returns the log of id, ErrNotFound if there is none (any more).
func (m *Memory) Get(id string) (*Log, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	l, ok := m.logs[id]
	if !ok {
		return nil, ErrNotFound
	}
	return l, nil
}

// Stats reports how many logs are held and their bytes. It drops the
// expired ones first, so that what it reports is what is held, and so that
// an idle gateway (no new streams) gives their memory back at every
// metrics scrape.
func (m *Memory) Stats() (streams int, bytes int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireLocked()
	return len(m.logs), m.total.Load()
}

// expireLocked drops the finished logs whose retention ran out.
func (m *Memory) expireLocked() {
	cutoff := m.opts.Now().Add(-m.opts.Retention)
	n := 0
	for n < len(m.done) && !m.done[n].finishedAt.After(cutoff) {
		n++
	}
	m.dropLocked(n)
}

// dropLocked forgets the n oldest finished logs. Their readers keep what
// they hold; nobody new finds them.
func (m *Memory) dropLocked(n int) {
	for _, l := range m.done[:n] {
		delete(m.logs, l.ID)
		m.total.Add(-l.finalBytes)
	}
	clear(m.done[:n])
	m.done = m.done[n:]
}

// evictFinished drops finished logs, oldest first, until the total fits.
func (m *Memory) evictFinished() {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for n < len(m.done) && m.total.Load() > m.opts.MaxTotalBytes {
		m.total.Add(-m.done[n].finalBytes)
		delete(m.logs, m.done[n].ID)
		n++
	}
	clear(m.done[:n])
	m.done = m.done[n:]
}

// Log is one stream's events.
type Log struct {
	ID   string
	Meta Meta
	m    *Memory

	mu sync.Mutex
	// data holds the events still kept, each a line ending in '\n'. It
	// only grows at its end, so a reader may keep reading a slice of it
	// after unlocking: those bytes never change.
	data []byte
	// base is the offset of data[0] since the log began; ends[i] is
	// where event first+i ends, on the same scale.
	base  int64
	ends  []int64
	first int64
	// bytes is what the log counts against the total.
	bytes      int64
	finished   bool
	finishedAt time.Time
	finalBytes int64 // bytes when it finished (read by Memory under m.mu)
	// wake is closed when events are appended, if a reader asked for it.
	wake    chan struct{}
	waiting bool
	// room is closed when a reader moves on, if the producer is waiting
	// for the log to shrink (WaitRoom).
	room chan struct{}

	readers   []*Reader
	onReaders func(n int)
}

// Append adds one event per '\n'-terminated line of lines. It reports
// false when the log is finished (the lines are then dropped).
func (l *Log) Append(lines []byte) bool {
	return l.add(lines, false)
}

// Finish appends the terminal events in lines and closes the log, which
// starts its retention. Only the first Finish counts: it reports whether
// this was it.
func (l *Log) Finish(lines []byte) bool {
	return l.add(lines, true)
}

func (l *Log) add(lines []byte, finish bool) bool {
	l.mu.Lock()
	if l.finished {
		l.mu.Unlock()
		return false
	}
	end := l.base + int64(len(l.data))
	if finish {
		// A finished log grows no more: sized once, exactly, rather
		// than doubled by append and then copied back down by fit (two
		// copies of the whole log, 2% of a native stream's CPU).
		l.data = exactly(l.data, len(lines))
		l.ends = exactly(l.ends, bytes.Count(lines, newline)+1)
	}
	l.data = append(l.data, lines...)
	n := int64(0)
	for rest := lines; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 { // a last line without its newline still counts
			i = len(rest) - 1
		}
		end += int64(i + 1)
		l.ends = append(l.ends, end)
		rest = rest[i+1:]
		n++
	}
	grew := int64(len(lines)) + n*eventOverhead
	l.bytes += grew
	total := l.m.total.Add(grew)
	if total > l.m.opts.MaxTotalBytes {
		l.m.evictFinished()
		total = l.m.total.Load()
	}
	l.trimLocked(total)
	if finish {
		l.finished, l.finishedAt, l.finalBytes = true, l.m.opts.Now(), l.bytes
		// A finished log is kept for its retention and grows no more:
		// it keeps its events, not the room append left after them (up
		// to as much again). Readers keep the arrays they were given.
		l.data, l.ends = fit(l.data), fit(l.ends)
	}
	if l.waiting {
		close(l.wake)
		l.wake, l.waiting = make(chan struct{}), false
	}
	l.mu.Unlock()
	if finish {
		l.m.mu.Lock()
		l.m.done = append(l.m.done, l)
		l.m.mu.Unlock()
	}
	return true
}

var newline = []byte{'\n'}

// exactly returns s with room for n more elements, reallocated to
// exactly that if it has less.
func exactly[T any](s []T, n int) []T {
	if cap(s)-len(s) >= n {
		return s
	}
	t := make([]T, len(s), len(s)+n)
	copy(t, s)
	return t
}

// fit returns s in an array of about its length (within the allocator's
// size classes, an eighth) when it has more room than that.
func fit[T any](s []T) []T {
	if cap(s)-len(s) > len(s)/8 {
		return slices.Clone(s)
	}
	return s
}

// trimLocked drops the oldest events while the log is over its own bounds,
// or while every log together is over the total and finished ones were
// already evicted. It keeps the newest event, and every event an attached
// reader has yet to read: it reports whether those held it over a bound.
func (l *Log) trimLocked(total int64) (held bool) {
	o := &l.m.opts
	keep := l.first + int64(len(l.ends)) - 1 // the newest
	for _, r := range l.readers {
		keep = min(keep, r.pos+1)
	}
	k := 0
	var freed int64
	for {
		over := l.bytes-freed > o.MaxStreamBytes || len(l.ends)-k > o.MaxStreamEvents || total-freed > o.MaxTotalBytes
		if !over {
			break
		}
		if l.first+int64(k) >= keep {
			held = keep < l.first+int64(len(l.ends))-1
			break
		}
		start := l.base
		if k > 0 {
			start = l.ends[k-1]
		}
		freed += l.ends[k] - start + eventOverhead
		k++
	}
	if k == 0 {
		return held
	}
	cut := l.ends[k-1] - l.base
	l.data = l.data[cut:]
	l.base += cut
	l.ends = l.ends[k:]
	l.first += int64(k)
	l.bytes -= freed
	l.m.total.Add(-freed)
	return held
}

// WaitRoom waits while readers that have yet to read the oldest events
// hold the log over its bounds, or until done is closed. The producer
// calls it after appending: a slow reader slows the upstream (as a direct
// connection would) instead of losing events.
func (l *Log) WaitRoom(done <-chan struct{}) {
	for {
		l.mu.Lock()
		if !l.trimLocked(l.m.total.Load()) {
			l.mu.Unlock()
			return
		}
		if l.room == nil {
			l.room = make(chan struct{})
		}
		room := l.room
		l.mu.Unlock()
		select {
		case <-room:
		case <-done:
			return
		}
	}
}

// wakeProducerLocked tells a producer waiting for room that a reader
// moved on or left.
func (l *Log) wakeProducerLocked() {
	if l.room != nil {
		close(l.room)
		l.room = nil
	}
}

// Events are consecutive events of a log, read at once.
type Events struct {
	// First is the id of the first event.
	First int64
	lines []byte
}

// Empty reports whether there are no events.
func (e Events) Empty() bool { return len(e.lines) == 0 }

// Each calls fn with every event's id and line (without its '\n'), and
// returns the id of the last.
func (e Events) Each(fn func(id int64, line []byte)) int64 {
	id := e.First - 1
	for rest := e.lines; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			i = len(rest)
		}
		id++
		fn(id, rest[:i])
		rest = rest[min(i+1, len(rest)):]
	}
	return id
}

// Read returns the events after id after. When there are none it reports
// whether none will ever come (the log is finished), and otherwise returns
// a channel closed when some arrive.
func (l *Log) Read(after int64) (ev Events, finished bool, wait <-chan struct{}, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.readLocked(after)
}

func (l *Log) readLocked(after int64) (ev Events, finished bool, wait <-chan struct{}, err error) {
	last := l.first + int64(len(l.ends)) - 1
	if after < l.first-1 {
		return Events{}, false, nil, ErrGap
	}
	if after >= last {
		if l.finished {
			return Events{}, true, nil, nil
		}
		l.waiting = true
		return Events{}, false, l.wake, nil
	}
	from := l.base
	if i := after - l.first; i >= 0 {
		from = l.ends[i]
	}
	return Events{First: after + 1, lines: l.data[from-l.base:]}, false, nil, nil
}

// Reader is an attached reader: while attached, the events after the
// last it asked for are kept for it.
type Reader struct {
	l    *Log
	pos  int64 // under l.mu
	once sync.Once
}

// Read is Log.Read, which also tells the log that the reader has every
// event up to after.
func (r *Reader) Read(after int64) (ev Events, finished bool, wait <-chan struct{}, err error) {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	if after > r.pos {
		r.pos = after
		r.l.wakeProducerLocked()
	}
	return r.l.readLocked(after)
}

// Advance tells the log that the reader has every event up to to, without
// reading: a producer that hands its events to a reader itself.
func (r *Reader) Advance(to int64) {
	r.l.mu.Lock()
	if to > r.pos {
		r.pos = to
		r.l.wakeProducerLocked()
	}
	r.l.mu.Unlock()
}

// Detach stops counting the reader; it may be called more than once.
func (r *Reader) Detach() {
	r.once.Do(func() {
		l := r.l
		l.mu.Lock()
		for i, x := range l.readers {
			if x == r {
				l.readers = append(l.readers[:i], l.readers[i+1:]...)
				break
			}
		}
		l.wakeProducerLocked()
		n, fn := len(l.readers), l.onReaders
		l.mu.Unlock()
		if fn != nil {
			fn(n)
		}
	})
}

// Last returns the id of the last event and whether the log is finished.
func (l *Log) Last() (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first + int64(len(l.ends)) - 1, l.finished
}

// OnReaders sets fn to be told the number of readers whenever it changes.
// fn runs on the reader's goroutine and must not block.
func (l *Log) OnReaders(fn func(n int)) {
	l.mu.Lock()
	l.onReaders = fn
	l.mu.Unlock()
}

// Attach counts a reader in, which has every event up to after, until it
// detaches.
func (l *Log) Attach(after int64) *Reader {
	r := &Reader{l: l, pos: after}
	l.mu.Lock()
	l.readers = append(l.readers, r)
	n, fn := len(l.readers), l.onReaders
	l.mu.Unlock()
	if fn != nil {
		fn(n)
	}
	return r
}

// TryAttach is Attach unless max readers (max > 0) are attached already.
func (l *Log) TryAttach(after int64, max int) (*Reader, bool) {
	r := &Reader{l: l, pos: after}
	l.mu.Lock()
	if max > 0 && len(l.readers) >= max {
		l.mu.Unlock()
		return nil, false
	}
	l.readers = append(l.readers, r)
	n, fn := len(l.readers), l.onReaders
	l.mu.Unlock()
	if fn != nil {
		fn(n)
	}
	return r, true
}

// Readers reports how many readers are attached.
func (l *Log) Readers() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.readers)
}
