// Package migrations holds Caracal's forward-only PostgreSQL schema migrations.
//
// Files are named NNNN_description.sql and applied in numeric order by the runner in
// internal/store/postgres. An applied file must never change: the runner records each
// file's SHA-256 and refuses to start when an applied file differs or disappears, so a
// schema change is always a new file.
package migrations

import "embed"

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS
