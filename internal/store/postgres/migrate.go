package postgres

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationLockKey is the pg_advisory_lock key every Caracal process takes before
// migrating, so that processes starting together against one database apply each
// migration exactly once. The value is arbitrary but must never change.
const migrationLockKey int64 = 0x6361726163616c // "caracal"

type migration struct {
	version int64
	name    string
	sql     string
	sum     string // hex SHA-256 of the file
}

// loadMigrations reads the NNNN_description.sql files of fsys in version order.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var out []migration
	seen := make(map[int64]string)
	for _, entry := range entries {
		name := entry.Name()
		if entry.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		prefix, _, ok := strings.Cut(name, "_")
		version, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, name, version)
		}
		seen[version] = name
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", name, err)
		}
		sum := sha256.Sum256(body)
		out = append(out, migration{version: version, name: name, sql: string(body), sum: hex.EncodeToString(sum[:])})
	}
	slices.SortFunc(out, func(a, b migration) int { return cmp.Compare(a.version, b.version) })
	return out, nil
}

// withLock runs fn on a dedicated connection that holds the storage-wide advisory lock
// for the whole call. Closing the connection releases the lock, including when fn
// fails half-way or ctx ends while it waits for the lock.
func withLock(ctx context.Context, cfg *pgx.ConnConfig, fn func(conn *pgx.Conn) error) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return dbErr(err, "connecting to postgresql for migrations")
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return dbErr(err, "taking the migration lock")
	}
	return fn(conn)
}

// appliedMigrations reads schema_migrations without writing anything; a database where
// the table does not exist yet has no applied migration.
func appliedMigrations(ctx context.Context, q querier) ([]migration, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, dbErr(err, "looking for schema_migrations")
	}
	if !exists {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT version, name, sha256 FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, dbErr(err, "reading schema_migrations")
	}
	applied, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (migration, error) {
		var m migration
		err := r.Scan(&m.version, &m.name, &m.sum)
		return m, err
	})
	if err != nil {
		return nil, dbErr(err, "reading schema_migrations")
	}
	return applied, nil
}

// checkApplied compares the applied migrations with this build's files and returns the
// versions already applied. An applied migration that this build lacks or that changed
// since is an error: the schema is not one this build knows.
func checkApplied(applied, files []migration) (map[int64]bool, error) {
	byVersion := make(map[int64]migration, len(files))
	for _, f := range files {
		byVersion[f.version] = f
	}
	done := make(map[int64]bool, len(applied))
	for _, a := range applied {
		f, ok := byVersion[a.version]
		if !ok || f.name != a.name {
			return nil, fmt.Errorf("applied migration %s is missing from this build; refusing to start", a.name)
		}
		if f.sum != a.sum {
			return nil, fmt.Errorf("applied migration %s has changed since it was applied (recorded sha256 %s, file sha256 %s); refusing to start: add a new migration instead", a.name, a.sum, f.sum)
		}
		done[a.version] = true
	}
	return done, nil
}

// migrate checks the applied migrations against files and applies the others in order,
// each in its own transaction together with its schema_migrations row. The caller holds
// the migration lock.
func migrate(ctx context.Context, conn *pgx.Conn, files []migration) error {
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    bigint      PRIMARY KEY,
		name       text        NOT NULL,
		sha256     text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return dbErr(err, "creating schema_migrations")
	}
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return err
	}
	done, err := checkApplied(applied, files)
	if err != nil {
		return err
	}
	for _, f := range files {
		if done[f.version] {
			continue
		}
		if err := applyMigration(ctx, conn, f); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, conn *pgx.Conn, f migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return dbErr(err, "applying migration %s", f.name)
	}
	// A no-op after Commit; on failure the error that matters is the one returned below.
	defer tx.Rollback(ctx)
	// Exec without arguments uses the simple protocol, which runs a multi-statement file.
	if _, err := tx.Exec(ctx, f.sql); err != nil {
		return dbErr(err, "applying migration %s", f.name)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)`,
		f.version, f.name, f.sum); err != nil {
		return dbErr(err, "recording migration %s", f.name)
	}
	if err := tx.Commit(ctx); err != nil {
		return dbErr(err, "committing migration %s", f.name)
	}
	return nil
}
