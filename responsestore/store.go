// Package responsestore keeps the responses of OpenAI's Responses API that
// clients asked to store: the response object and the input it answered,
// under the key that created it, for a retention. In memory (one
// replica's, bounded) or in Redis (every replica sharing it).
package responsestore

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is Get's answer for a response not kept (never stored,
// deleted, or past its retention).
var ErrNotFound = errors.New("response not found")

// Record is one stored response.
type Record struct {
	ID string `json:"id"`
	// Key is the name of the API key that created it ("" with auth off):
	// only that key may read it.
	Key string `json:"key"`
	// Input is the input items the response answered, the history of a
	// previous_response_id included, as a JSON array.
	Input json.RawMessage `json:"input"`
	// Response is the response object in its latest state.
	Response json.RawMessage `json:"response"`
	// Stream is the resumable stream of a background response.
	Stream string `json:"stream,omitempty"`
}

func (r *Record) size() int64 {
	return int64(len(r.ID) + len(r.Key) + len(r.Input) + len(r.Response) + len(r.Stream))
}

// Store keeps records.
type Store interface {
	// Put stores r, replacing any record of its id, for the retention.
	Put(ctx context.Context, r *Record) error
	Get(ctx context.Context, id string) (*Record, error)
	// Delete removes the record of id, reporting whether there was one.
	Delete(ctx context.Context, id string) (bool, error)
}

// Memory is a Store in this process, bounded: past maxBytes, the oldest
// records are dropped.
type Memory struct {
	mu        sync.Mutex
	retention time.Duration
	maxBytes  int64
	now       func() time.Time
	bytes     int64
	byID      map[string]*list.Element
	order     *list.List // of *entry, oldest first
}

type entry struct {
	rec     *Record
	expires time.Time
}

// NewMemory returns a memory store; now is its clock (nil: time.Now).
func NewMemory(retention time.Duration, maxBytes int64, now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{retention: retention, maxBytes: maxBytes, now: now, byID: map[string]*list.Element{}, order: list.New()}
}

// Put stores a copy of r.
func (m *Memory) Put(_ context.Context, r *Record) error {
	c := *r
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(r.ID)
	m.byID[r.ID] = m.order.PushBack(&entry{rec: &c, expires: m.now().Add(m.retention)})
	m.bytes += c.size()
	for m.bytes > m.maxBytes && m.order.Len() > 1 {
		m.remove(m.order.Front().Value.(*entry).rec.ID)
	}
	return nil
}

// Get returns a copy of the record of id.
func (m *Memory) Get(_ context.Context, id string) (*Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.byID[id]
	if !ok {
		return nil, ErrNotFound
	}
	e := el.Value.(*entry)
	if !m.now().Before(e.expires) {
		m.remove(id)
		return nil, ErrNotFound
	}
	c := *e.rec
	return &c, nil
}

// Delete removes the record of id.
func (m *Memory) Delete(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.byID[id]
	m.remove(id)
	return ok, nil
}

// remove drops id, if kept; m.mu is held.
func (m *Memory) remove(id string) {
	el, ok := m.byID[id]
	if !ok {
		return
	}
	m.bytes -= el.Value.(*entry).rec.size()
	m.order.Remove(el)
	delete(m.byID, id)
}

// Redis is a Store in Redis: each record one key, expiring with the
// retention.
type Redis struct {
	c         *redis.Client
	retention time.Duration
}

// NewRedis returns a store on c.
func NewRedis(c *redis.Client, retention time.Duration) *Redis {
	return &Redis{c: c, retention: retention}
}

func key(id string) string { return "gw:response:" + id }

// Put stores r.
func (s *Redis) Put(ctx context.Context, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	if err := s.c.Set(ctx, key(r.ID), b, s.retention).Err(); err != nil {
		return fmt.Errorf("store response: %w", err)
	}
	return nil
}

// Get returns the record of id.
func (s *Redis) Get(ctx context.Context, id string) (*Record, error) {
	b, err := s.c.Get(ctx, key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	return &r, nil
}

// Delete removes the record of id.
func (s *Redis) Delete(ctx context.Context, id string) (bool, error) {
	n, err := s.c.Del(ctx, key(id)).Result()
	if err != nil {
		return false, fmt.Errorf("delete response: %w", err)
	}
	return n > 0, nil
}

// Close releases the Redis client.
func (s *Redis) Close() error { return s.c.Close() }
