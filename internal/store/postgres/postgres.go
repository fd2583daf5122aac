// Package postgres implements store.Store on PostgreSQL through a pgx connection pool.
//
// Zone isolation is enforced by the schema (see migrations/0001_init.sql): zone-owned
// rows are keyed by (zone_id, id) and foreign keys carry zone_id on both sides. Methods
// that change the delegation graph, signing keys or policy bundles run in one
// transaction that first locks the zone row, which serialises writers of a zone and
// makes the epoch strictly increase.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/migrations"
)

// Store is the PostgreSQL store.
type Store struct {
	pool *pgxpool.Pool
	// lockConfig opens the dedicated connection that holds the advisory lock in Setup.
	lockConfig *pgx.ConnConfig
	files      []migration
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn and applies pending migrations (Connect, then
// Setup). It refuses to start when an applied migration changed or is missing.
// Connection failures wrap store.ErrUnavailable.
func Open(ctx context.Context, dsn string) (*Store, error) {
	s, err := Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if err := s.Setup(ctx, nil); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Connect opens a pool to the database at dsn and checks its schema without writing:
// PostgreSQL must answer, and every migration already applied must be one of this
// build's, unchanged. Pending migrations are left to Setup. ctx bounds the wait for the
// server; connection failures wrap store.ErrUnavailable.
func Connect(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing postgresql connection string: %w", err)
	}
	files, err := loadMigrations(migrations.FS)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, dbErr(err, "opening postgresql pool")
	}
	s := &Store{pool: pool, lockConfig: cfg.ConnConfig.Copy(), files: files}
	if err := s.checkSchema(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// checkSchema reads the applied migrations (read-only) and refuses a schema this build
// does not know.
func (s *Store) checkSchema(ctx context.Context) error {
	applied, err := appliedMigrations(ctx, s.pool)
	if err != nil {
		return err
	}
	_, err = checkApplied(applied, s.files)
	return err
}

// Setup takes the storage-wide advisory lock, applies the pending migrations, runs fn
// (when not nil) and releases the lock, so that processes starting together against
// one database migrate once and run their start-up writes one after the other.
func (s *Store) Setup(ctx context.Context, fn func(context.Context) error) error {
	return withLock(ctx, s.lockConfig, func(conn *pgx.Conn) error {
		if err := migrate(ctx, conn, s.files); err != nil {
			return err
		}
		if fn == nil {
			return nil
		}
		return fn(ctx)
	})
}

// Close closes the pool; later calls fail with store.ErrUnavailable.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// SQLSTATE codes the store distinguishes.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
	classDataException      = "22"
	classIntegrity          = "23"
)

// dbErr classifies a database error for callers: a missing row or a dangling reference
// is store.ErrNotFound, a duplicate key store.ErrConflict, bad input data a plain error,
// and anything else (network, timeout, server failure) store.ErrUnavailable, so that a
// caller never mistakes a failing database for an answer.
func dbErr(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", msg, store.ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == codeUniqueViolation:
			return fmt.Errorf("%s: %w: %s", msg, store.ErrConflict, pgErr.ConstraintName)
		case pgErr.Code == codeForeignKeyViolation:
			return fmt.Errorf("%s: %w: %s", msg, store.ErrNotFound, pgErr.ConstraintName)
		case strings.HasPrefix(pgErr.Code, classDataException), strings.HasPrefix(pgErr.Code, classIntegrity):
			return fmt.Errorf("%s: %w", msg, err)
		}
	}
	return fmt.Errorf("%s: %w: %w", msg, store.ErrUnavailable, err)
}

// querier is what the pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// inTx runs fn in a transaction. Errors returned by fn are returned unchanged, so fn
// classifies its own errors (and CreateEdge can return its check's error as is).
func (s *Store) inTx(ctx context.Context, what string, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return dbErr(err, "%s: beginning transaction", what)
	}
	// A no-op after Commit; when fn failed, its error is the one that matters.
	defer tx.Rollback(ctx)
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return dbErr(err, "%s: committing", what)
	}
	return nil
}

// lockZone locks the zone row for the rest of the transaction and returns its epoch.
func lockZone(ctx context.Context, tx pgx.Tx, zoneID string) (int64, error) {
	var epoch int64
	if err := tx.QueryRow(ctx, `SELECT epoch FROM zones WHERE id = $1 FOR UPDATE`, zoneID).Scan(&epoch); err != nil {
		return 0, dbErr(err, "zone %q", zoneID)
	}
	return epoch, nil
}

// bumpEpoch increments the epoch of a zone locked by lockZone.
func bumpEpoch(ctx context.Context, tx pgx.Tx, zoneID string) (int64, error) {
	var epoch int64
	if err := tx.QueryRow(ctx, `UPDATE zones SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch`, zoneID).Scan(&epoch); err != nil {
		return 0, dbErr(err, "bumping epoch of zone %q", zoneID)
	}
	return epoch, nil
}

// scanner is a row to scan: pgx.Row or pgx.CollectableRow.
type scanner interface {
	Scan(dest ...any) error
}

// collect scans every row with scan.
func collect[T any](rows pgx.Rows, scan func(scanner) (T, error)) ([]T, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (T, error) { return scan(r) })
}

// ts normalises a time the way timestamptz stores it: UTC, microseconds. pgx would
// truncate to microseconds too; doing it here makes returned values exact.
func ts(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return ts(time.Now())
	}
	return ts(t)
}

// nullTime stores a zero time as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = ts(t)
	return &t
}

// fromNull reads a nullable timestamptz; pgx returns local times, callers get UTC.
func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// nullString stores an empty string as NULL.
func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func fromNullString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// nonNil keeps NOT NULL array and bytea columns satisfied: pgx sends a nil slice as NULL.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
