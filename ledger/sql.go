package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	// The SQL drivers: SQLite in pure Go, PostgreSQL through pgx.
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// dialect is what differs between the databases.
type dialect struct {
	name string
	// placeholder is the n-th (from 1) bind parameter.
	placeholder func(n int) string
	// lock, run first in the migration's transaction, keeps replicas
	// starting together from migrating at once.
	lock string
	// maxRows bounds the rows of one INSERT (bind parameter limits).
	maxRows int
}

var (
	sqlite   = dialect{name: "sqlite", placeholder: func(int) string { return "?" }, maxRows: 1000}
	postgres = dialect{name: "postgres", placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
		lock: "SELECT pg_advisory_xact_lock(7234501)", maxRows: 2000}
)

// DB is a ledger database: the Sink of a Ledger, and what reads it.
type DB struct {
	db *sql.DB
	d  dialect
}

var _ Sink = (*DB)(nil)

// OpenSQLite opens (creating it if need be) the SQLite file at path and
// migrates its schema.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	// WAL: the writer does not block readers (GET /admin/usage); a
	// busy timeout rides out another process's write.
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return open(ctx, db, sqlite)
}

// OpenPostgres connects to the PostgreSQL database at dsn and migrates its
// schema.
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(time.Minute)
	return open(ctx, db, postgres)
}

func open(ctx context.Context, db *sql.DB, d dialect) (*DB, error) {
	l := &DB{db: db, d: d}
	if err := l.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return l, nil
}

// migrations are the schema's versions, in order: a database at version n
// has had the first n applied. Never edit one that has shipped: add one.
var migrations = []string{
	`CREATE TABLE gateway_usage (
		request_id TEXT PRIMARY KEY,
		time_us BIGINT NOT NULL,
		day TEXT NOT NULL,
		key_name TEXT NOT NULL,
		model TEXT NOT NULL,
		provider TEXT NOT NULL,
		deployment TEXT NOT NULL,
		endpoint TEXT NOT NULL,
		status INTEGER NOT NULL,
		ending TEXT NOT NULL,
		error_code TEXT NOT NULL,
		prompt_tokens BIGINT NOT NULL,
		cached_tokens BIGINT NOT NULL,
		cache_write_tokens BIGINT NOT NULL,
		completion_tokens BIGINT NOT NULL,
		reasoning_tokens BIGINT NOT NULL,
		usage_estimated BOOLEAN NOT NULL,
		cost DOUBLE PRECISION NOT NULL,
		priced BOOLEAN NOT NULL,
		ttft_ms DOUBLE PRECISION NOT NULL,
		duration_ms DOUBLE PRECISION NOT NULL
	)`,
	`CREATE INDEX gateway_usage_time ON gateway_usage (time_us)`,
	`CREATE INDEX gateway_usage_key_time ON gateway_usage (key_name, time_us)`,
	// Keys made through the admin API (keys.go).
	`CREATE TABLE gateway_keys (
		name TEXT PRIMARY KEY,
		digest TEXT NOT NULL UNIQUE,
		settings TEXT NOT NULL,
		created_us BIGINT NOT NULL,
		updated_us BIGINT NOT NULL,
		revoked_us BIGINT NOT NULL
	)`,
	`CREATE TABLE gateway_keys_rev (rev BIGINT NOT NULL)`,
	`INSERT INTO gateway_keys_rev (rev) VALUES (0)`,
}

// SchemaVersion is the version this build migrates to.
var SchemaVersion = len(migrations)

// migrate brings the schema to SchemaVersion, in one transaction.
func (l *DB) migrate(ctx context.Context) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger %s: %w", l.d.name, err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit, a no-op
	if l.d.lock != "" {
		if _, err := tx.ExecContext(ctx, l.d.lock); err != nil {
			return fmt.Errorf("ledger migration lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS gateway_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("ledger schema table: %w", err)
	}
	var v sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM gateway_schema`).Scan(&v); err != nil {
		return fmt.Errorf("ledger schema version: %w", err)
	}
	have := int(v.Int64)
	if have > len(migrations) {
		return fmt.Errorf("ledger schema is at version %d, newer than this gateway's %d: run a newer gateway", have, len(migrations))
	}
	for i := have; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("ledger migration %d: %w", i+1, err)
		}
	}
	if have < len(migrations) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM gateway_schema`); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO gateway_schema (version) VALUES (`+l.d.placeholder(1)+`)`, len(migrations)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// columns are gateway_usage's, in the order values writes them.
const columns = "request_id, time_us, day, key_name, model, provider, deployment, endpoint, status, ending, error_code, " +
	"prompt_tokens, cached_tokens, cache_write_tokens, completion_tokens, reasoning_tokens, usage_estimated, cost, priced, ttft_ms, duration_ms"

const ncolumns = 21

func values(args []any, e *Entry) []any {
	t := e.Time.UTC()
	return append(args, e.RequestID, t.UnixMicro(), t.Format(time.DateOnly), e.Key, e.Model, e.Provider, e.Deployment, e.Endpoint,
		e.Status, e.End, e.ErrorCode, e.PromptTokens, e.CachedTokens, e.CacheWriteTokens, e.CompletionTokens, e.ReasoningTokens,
		e.UsageEstimated, e.Cost, e.Priced, millis(e.TTFT), millis(e.Duration))
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Write inserts rows in one transaction; a row whose request id is there
// already (a batch retried after a write that did land) is skipped.
func (l *DB) Write(ctx context.Context, rows []Entry) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit, a no-op
	for len(rows) > 0 {
		n := min(len(rows), l.d.maxRows)
		var q strings.Builder
		q.WriteString("INSERT INTO gateway_usage (" + columns + ") VALUES ")
		args := make([]any, 0, n*ncolumns)
		for i := range rows[:n] {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteByte('(')
			for j := 1; j <= ncolumns; j++ {
				if j > 1 {
					q.WriteByte(',')
				}
				q.WriteString(l.d.placeholder(i*ncolumns + j))
			}
			q.WriteByte(')')
			args = values(args, &rows[i])
		}
		q.WriteString(" ON CONFLICT (request_id) DO NOTHING")
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return tx.Commit()
}

// Close closes the database.
func (l *DB) Close() error { return l.db.Close() }

// Total is what a group of requests used.
type Total struct {
	// Day (YYYY-MM-DD, UTC), Key and Model are the group's; empty when
	// the query does not group by them.
	Day   string `json:"day,omitempty"`
	Key   string `json:"key,omitempty"`
	Model string `json:"model,omitempty"`

	Requests int64 `json:"requests"`
	// Errors are requests refused after routing, or streams that
	// failed (not those the client left).
	Errors           int64   `json:"errors"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CachedTokens     int64   `json:"cached_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	ReasoningTokens  int64   `json:"reasoning_tokens"`
	Cost             float64 `json:"cost"`
}

// Query selects and groups rows: [From, To) in time, optionally one key,
// grouped by the columns By names (day, key, model).
type Query struct {
	From, To time.Time
	Key      string
	By       []string
}

// groupColumns are the columns a Query may group by.
var groupColumns = map[string]string{"day": "day", "key": "key_name", "model": "model"}

// Usage sums the rows q selects, per group, in the groups' order.
func (l *DB) Usage(ctx context.Context, q Query) ([]Total, error) {
	var group []string
	for _, b := range q.By {
		c, ok := groupColumns[b]
		if !ok {
			return nil, fmt.Errorf("cannot group by %q (day, key, model)", b)
		}
		group = append(group, c)
	}
	// An error is a request refused after routing, or a stream the
	// upstream or the gateway failed: not one the client left.
	sel := "COUNT(*), COALESCE(SUM(CASE WHEN status >= 400 OR ending IN ('upstream_error', 'shutdown', 'stream_error') THEN 1 ELSE 0 END),0), " +
		"COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(cached_tokens),0), COALESCE(SUM(completion_tokens),0), COALESCE(SUM(reasoning_tokens),0), COALESCE(SUM(cost),0)"
	keys := strings.Join(group, ", ")
	stmt := "SELECT " + sel
	if keys != "" {
		stmt = "SELECT " + keys + ", " + sel
	}
	args := []any{q.From.UnixMicro(), q.To.UnixMicro()}
	stmt += " FROM gateway_usage WHERE time_us >= " + l.d.placeholder(1) + " AND time_us < " + l.d.placeholder(2)
	if q.Key != "" {
		args = append(args, q.Key)
		stmt += " AND key_name = " + l.d.placeholder(3)
	}
	if keys != "" {
		stmt += " GROUP BY " + keys + " ORDER BY " + keys
	}
	rows, err := l.db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger usage: %w", err)
	}
	defer rows.Close()
	var out []Total
	for rows.Next() {
		var t Total
		dest := make([]any, 0, len(group)+7)
		for _, c := range group {
			switch c {
			case "day":
				dest = append(dest, &t.Day)
			case "key_name":
				dest = append(dest, &t.Key)
			case "model":
				dest = append(dest, &t.Model)
			}
		}
		dest = append(dest, &t.Requests, &t.Errors, &t.PromptTokens, &t.CachedTokens, &t.CompletionTokens, &t.ReasoningTokens, &t.Cost)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("ledger usage: %w", err)
		}
		if t.Requests > 0 {
			out = append(out, t)
		}
	}
	return out, rows.Err()
}
