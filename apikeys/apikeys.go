// Package apikeys keeps the API keys made at runtime (through the admin
// API) beside those of the config file: stored in the ledger's database,
// shared by every replica using it, each replica polling for changes so
// that a revoked key is refused everywhere within PollInterval.
package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamgate/gateway/config"
	"github.com/streamgate/gateway/ledger"
)

// PollInterval is how often a replica looks for key changes: a key
// revoked on one replica is refused by the others within it.
const PollInterval = 500 * time.Millisecond

// Settings are what a runtime key may do, as a config key's.
type Settings struct {
	Models []string      `json:"models,omitempty"`
	Limits config.Limits `json:"limits"`
	Admin  bool          `json:"admin,omitempty"`
}

// Key is a stored key.
type Key struct {
	Name string
	Settings
	Created, Updated, Revoked time.Time
	digest                    string
}

// Config is the key as a config key, for admission.
func (k Key) Config() config.Key {
	return config.Key{KeySHA256: k.digest, Models: k.Models, Limits: k.Limits, Admin: k.Admin}
}

// Set is the keys at one revision.
type Set struct {
	Rev int64
	// All is every key by name, revoked ones too.
	All      map[string]Key
	byDigest map[string]string
}

// Lookup returns the name of the live key whose secret has digest (hex
// SHA-256).
func (s *Set) Lookup(digest string) (string, bool) {
	name, ok := s.byDigest[digest]
	return name, ok
}

// Live returns the live key called name.
func (s *Set) Live(name string) (Key, bool) {
	k, ok := s.All[name]
	return k, ok && k.Revoked.IsZero()
}

// Store is where keys are kept: a ledger.DB.
type Store interface {
	Keys(ctx context.Context) ([]ledger.KeyRow, int64, error)
	KeysRevision(ctx context.Context) (int64, error)
	CreateKey(ctx context.Context, k ledger.KeyRow) error
	UpdateKey(ctx context.Context, name, settings string) error
	RevokeKey(ctx context.Context, name string) error
}

// Ring is this replica's view of the runtime keys, refreshed by polling.
type Ring struct {
	store Store
	log   *slog.Logger
	cur   atomic.Pointer[Set]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every new Set

	stop chan struct{}
	done chan struct{}
}

// Open loads the keys and starts polling; Close stops it.
func Open(ctx context.Context, store Store, log *slog.Logger) (*Ring, error) {
	r := &Ring{store: store, log: log, changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if err := r.Refresh(ctx); err != nil {
		return nil, err
	}
	go r.poll()
	return r, nil
}

// Close stops polling.
func (r *Ring) Close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
		<-r.done
	}
}

// Set is the current set of keys.
func (r *Ring) Set() *Set { return r.cur.Load() }

// Lookup returns the name of the live key whose secret has digest.
func (r *Ring) Lookup(digest string) (string, bool) { return r.Set().Lookup(digest) }

// Revision is the revision of the keys held.
func (r *Ring) Revision() int64 { return r.Set().Rev }

// Live returns the live key called name, as a config key.
func (r *Ring) Live(name string) (config.Key, bool) {
	k, ok := r.Set().Live(name)
	return k.Config(), ok
}

// Names are the names of the live keys.
func (r *Ring) Names() []string {
	s := r.Set()
	out := make([]string, 0, len(s.byDigest))
	for _, name := range s.byDigest {
		out = append(out, name)
	}
	return out
}

func (r *Ring) poll() {
	defer close(r.done)
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rev, err := r.store.KeysRevision(ctx)
		if err == nil && rev != r.Set().Rev {
			err = r.Refresh(ctx)
		}
		cancel()
		// One line when the database goes away and one when it is back:
		// meanwhile the keys last read stay in force.
		if err != nil && !failing {
			r.log.Warn("runtime keys: cannot read the database; keeping the keys last read", "error", err.Error())
		} else if err == nil && failing {
			r.log.Info("runtime keys: reading the database again")
		}
		failing = err != nil
	}
}

// Refresh reads every key now.
func (r *Ring) Refresh(ctx context.Context) error {
	rows, rev, err := r.store.Keys(ctx)
	if err != nil {
		return err
	}
	s := &Set{Rev: rev, All: make(map[string]Key, len(rows)), byDigest: make(map[string]string, len(rows))}
	for _, row := range rows {
		k := Key{Name: row.Name, Created: row.Created, Updated: row.Updated, Revoked: row.Revoked, digest: row.Digest}
		if err := json.Unmarshal([]byte(row.Settings), &k.Settings); err != nil {
			r.log.Warn("runtime keys: unreadable settings; the key is refused", "key", row.Name, "error", err.Error())
			continue
		}
		s.All[k.Name] = k
		if k.Revoked.IsZero() {
			s.byDigest[row.Digest] = k.Name
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.cur.Load(); old != nil && old.Rev >= rev {
		return nil
	}
	r.cur.Store(s)
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// Wait returns once the ring holds revision rev or a later one, or when
// ctx ends.
func (r *Ring) Wait(ctx context.Context, rev int64) error {
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if r.Set().Rev >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Create stores a new key with settings and returns it with its secret,
// which is stored only as a digest and never shown again.
func (r *Ring) Create(ctx context.Context, name string, s Settings) (Key, string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Key{}, "", fmt.Errorf("key secret: %w", err)
	}
	secret := "sk-gw-" + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(secret))
	js, err := json.Marshal(s)
	if err != nil {
		return Key{}, "", err
	}
	if err := r.store.CreateKey(ctx, ledger.KeyRow{Name: name, Digest: hex.EncodeToString(sum[:]), Settings: string(js)}); err != nil {
		return Key{}, "", err
	}
	k, err := r.reread(ctx, name)
	return k, secret, err
}

// Update replaces a live key's settings.
func (r *Ring) Update(ctx context.Context, name string, s Settings) (Key, error) {
	js, err := json.Marshal(s)
	if err != nil {
		return Key{}, err
	}
	if err := r.store.UpdateKey(ctx, name, string(js)); err != nil {
		return Key{}, err
	}
	return r.reread(ctx, name)
}

// Revoke revokes a live key.
func (r *Ring) Revoke(ctx context.Context, name string) (Key, error) {
	if err := r.store.RevokeKey(ctx, name); err != nil {
		return Key{}, err
	}
	return r.reread(ctx, name)
}

// reread refreshes the ring after a change made here, so that this
// replica applies it at once, and returns the key changed.
func (r *Ring) reread(ctx context.Context, name string) (Key, error) {
	if err := r.Refresh(ctx); err != nil {
		return Key{}, err
	}
	return r.Set().All[name], nil
}
