package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The ledger's database also keeps the API keys made at runtime, so that
// every replica sharing it serves the same keys. Each change bumps one
// revision counter in the same transaction: a replica polls the counter
// alone and reads the keys only when it moved.

// KeyRow is a stored key: its secret only as a digest, its settings as
// the JSON the admin API stores.
type KeyRow struct {
	Name, Digest, Settings string
	Created, Updated       time.Time
	// Revoked is zero while the key is live.
	Revoked time.Time
}

// Errors of key changes.
var (
	ErrKeyExists   = errors.New("a key of that name exists")
	ErrKeyNotFound = errors.New("no such key")
)

// Keys returns every stored key (revoked ones too) and the revision they
// are at.
func (l *DB) Keys(ctx context.Context) ([]KeyRow, int64, error) {
	tx, err := l.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("keys: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read-only
	var rev int64
	if err := tx.QueryRowContext(ctx, `SELECT rev FROM gateway_keys_rev`).Scan(&rev); err != nil {
		return nil, 0, fmt.Errorf("keys revision: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT name, digest, settings, created_us, updated_us, revoked_us FROM gateway_keys ORDER BY name`)
	if err != nil {
		return nil, 0, fmt.Errorf("keys: %w", err)
	}
	defer rows.Close()
	var out []KeyRow
	for rows.Next() {
		var k KeyRow
		var c, u, r int64
		if err := rows.Scan(&k.Name, &k.Digest, &k.Settings, &c, &u, &r); err != nil {
			return nil, 0, fmt.Errorf("keys: %w", err)
		}
		k.Created, k.Updated = time.UnixMicro(c).UTC(), time.UnixMicro(u).UTC()
		if r != 0 {
			k.Revoked = time.UnixMicro(r).UTC()
		}
		out = append(out, k)
	}
	return out, rev, rows.Err()
}

// KeysRevision is the revision of the stored keys: it moves on every
// change.
func (l *DB) KeysRevision(ctx context.Context) (int64, error) {
	var rev int64
	if err := l.db.QueryRowContext(ctx, `SELECT rev FROM gateway_keys_rev`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("keys revision: %w", err)
	}
	return rev, nil
}

// CreateKey stores a new key; ErrKeyExists if the name is taken (by a
// live or a revoked key: names are never reused, so the ledger's rows
// keep meaning one key).
func (l *DB) CreateKey(ctx context.Context, k KeyRow) error {
	return l.changeKeys(ctx, func(tx *sql.Tx, now int64) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM gateway_keys WHERE name = `+l.d.placeholder(1), k.Name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrKeyExists
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO gateway_keys (name, digest, settings, created_us, updated_us, revoked_us) VALUES (`+
			l.d.placeholder(1)+`,`+l.d.placeholder(2)+`,`+l.d.placeholder(3)+`,`+l.d.placeholder(4)+`,`+l.d.placeholder(5)+`, 0)`,
			k.Name, k.Digest, k.Settings, now, now)
		return err
	})
}

// UpdateKey replaces a live key's settings; ErrKeyNotFound if there is
// none of that name.
func (l *DB) UpdateKey(ctx context.Context, name, settings string) error {
	return l.changeKeys(ctx, func(tx *sql.Tx, now int64) error {
		return one(tx.ExecContext(ctx, `UPDATE gateway_keys SET settings = `+l.d.placeholder(1)+`, updated_us = `+l.d.placeholder(2)+
			` WHERE name = `+l.d.placeholder(3)+` AND revoked_us = 0`, settings, now, name))
	})
}

// RevokeKey revokes a live key; ErrKeyNotFound if there is none of that
// name.
func (l *DB) RevokeKey(ctx context.Context, name string) error {
	return l.changeKeys(ctx, func(tx *sql.Tx, now int64) error {
		return one(tx.ExecContext(ctx, `UPDATE gateway_keys SET revoked_us = `+l.d.placeholder(1)+`, updated_us = `+l.d.placeholder(2)+
			` WHERE name = `+l.d.placeholder(3)+` AND revoked_us = 0`, now, now, name))
	})
}

func one(r sql.Result, err error) error {
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrKeyNotFound
	}
	return nil
}

// changeKeys runs change and bumps the revision, in one transaction.
func (l *DB) changeKeys(ctx context.Context, change func(tx *sql.Tx, nowUs int64) error) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit, a no-op
	// The revision first: on PostgreSQL its row lock orders concurrent
	// changes.
	if _, err := tx.ExecContext(ctx, `UPDATE gateway_keys_rev SET rev = rev + 1`); err != nil {
		return fmt.Errorf("keys revision: %w", err)
	}
	if err := change(tx, time.Now().UnixMicro()); err != nil {
		if errors.Is(err, ErrKeyExists) || errors.Is(err, ErrKeyNotFound) {
			return err
		}
		return fmt.Errorf("keys: %w", err)
	}
	return tx.Commit()
}
