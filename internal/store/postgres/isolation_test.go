package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/migrations"
)

// execCode runs sql and returns the SQLSTATE it failed with, or "" on success.
func execCode(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	_, err := conn.Exec(t.Context(), sql, args...)
	if err == nil {
		return ""
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("%s: %v", sql, err)
	}
	return pgErr.Code
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestDatabaseRefusesCrossZoneReferences(t *testing.T) {
	_, schemaDSN := openFresh(t)
	conn := rawConn(t, schemaDSN)
	for _, z := range []string{"a", "b"} {
		mustExec(t, conn, `INSERT INTO zones (id, name, created_at) VALUES ($1, $1, now())`, z)
		mustExec(t, conn, `INSERT INTO resources (zone_id, id, identifier, scopes, created_at) VALUES ($1, 'r-' || $1, 'https://' || $1 || '.example/', '{}', now())`, z)
		mustExec(t, conn, `INSERT INTO applications (zone_id, id, name, secret_hash, created_at) VALUES ($1, 'app-' || $1, '', '', now())`, z)
		mustExec(t, conn, `INSERT INTO sessions (zone_id, id, client_id, status, created_at, expires_at) VALUES ($1, 's-' || $1, 'app-' || $1, 'active', now(), now())`, z)
	}
	mustExec(t, conn, `INSERT INTO delegation_edges (zone_id, id, source_session_id, target_session_id, resource, scopes, expires_at, max_hops, status, created_at, epoch)
		VALUES ('a', 'e-a', 's-a', 's-a', 'https://a.example/', '{}', now(), 1, 'active', now(), 1)`)

	const edgeInsert = `INSERT INTO delegation_edges (zone_id, id, source_session_id, target_session_id, resource, scopes, expires_at, max_hops, parent_edge_id, status, created_at, epoch)
		VALUES ('b', $1, $2, $3, $4, '{}', now(), 1, $5, 'active', now(), 1)`
	tests := []struct {
		name string
		sql  string
		args []any
	}{
		{"a session of zone b for an application of zone a",
			`INSERT INTO sessions (zone_id, id, client_id, status, created_at, expires_at) VALUES ('b', 's-x', 'app-a', 'active', now(), now())`, nil},
		{"an edge of zone b from a session of zone a", edgeInsert, []any{"e1", "s-a", "s-b", "https://b.example/", nil}},
		{"an edge of zone b to a session of zone a", edgeInsert, []any{"e2", "s-b", "s-a", "https://b.example/", nil}},
		{"an edge of zone b under an edge of zone a", edgeInsert, []any{"e3", "s-b", "s-b", "https://b.example/", "e-a"}},
		{"an edge of zone b on a resource of zone a", edgeInsert, []any{"e4", "s-b", "s-b", "https://a.example/", nil}},
		{"an outbox row of a missing zone",
			`INSERT INTO outbox (zone_id, stream, fields, created_at) VALUES ('c', 's', '{}', now())`, nil},
		{"a signing key of a missing zone",
			`INSERT INTO signing_keys (zone_id, id, sealed, public_jwk, status, created_at) VALUES ('c', 'k', '', '', 'active', now())`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			if code := execCode(t, conn, tt.sql, tt.args...); code != codeForeignKeyViolation {
				t.Fatalf("SQLSTATE = %q, want %s (foreign key violation)", code, codeForeignKeyViolation)
			}
		})
	}

	t.Run("the same ids in two zones are fine", func(t *testing.T) {
		for _, z := range []string{"a", "b"} {
			mustExec(t, conn, `INSERT INTO applications (zone_id, id, name, secret_hash, created_at) VALUES ($1, 'shared', '', '', now())`, z)
			mustExec(t, conn, `INSERT INTO sessions (zone_id, id, client_id, status, created_at, expires_at) VALUES ($1, 'shared', 'shared', 'active', now(), now())`, z)
			mustExec(t, conn, `INSERT INTO resources (zone_id, id, identifier, scopes, created_at) VALUES ($1, 'shared', 'https://shared.example/', '{}', now())`, z)
			mustExec(t, conn, `INSERT INTO delegation_edges (zone_id, id, source_session_id, target_session_id, resource, scopes, expires_at, max_hops, status, created_at, epoch)
				VALUES ($1, 'shared', 'shared', 'shared', 'https://shared.example/', '{}', now(), 1, 'active', now(), 1)`, z)
			mustExec(t, conn, `INSERT INTO signing_keys (zone_id, id, sealed, public_jwk, status, created_at) VALUES ($1, 'shared', '', '', 'retired', now())`, z)
		}
		if code := execCode(t, conn, `INSERT INTO applications (zone_id, id, name, secret_hash, created_at) VALUES ('a', 'shared', '', '', now())`); code != codeUniqueViolation {
			t.Fatalf("a repeated id within one zone: SQLSTATE = %q, want %s", code, codeUniqueViolation)
		}
	})
}

// relations lists the "Relation Name" entries of an EXPLAIN (FORMAT JSON) plan.
func relations(node any, out *[]string) {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			if k == "Relation Name" {
				*out = append(*out, v.(string))
			}
			relations(v, out)
		}
	case []any:
		for _, v := range n {
			relations(v, out)
		}
	}
}

func TestZoneQualifiedQueriesTouchOnePartition(t *testing.T) {
	_, schemaDSN := openFresh(t)
	conn := rawConn(t, schemaDSN)
	for _, table := range []string{"sessions", "delegation_edges", "outbox", "audit_events"} {
		t.Run(table, func(t *testing.T) {
			for _, zone := range []string{"zone-a", "zone-b", "z"} {
				var plan []byte
				// A parameter, like the store's queries; EXPLAIN plans with its value.
				if err := conn.QueryRow(t.Context(), `EXPLAIN (FORMAT JSON) SELECT * FROM `+table+` WHERE zone_id = $1`, zone).Scan(&plan); err != nil {
					t.Fatal(err)
				}
				var doc any
				if err := json.Unmarshal(plan, &doc); err != nil {
					t.Fatal(err)
				}
				var rels []string
				relations(doc, &rels)
				if len(rels) != 1 || !strings.HasPrefix(rels[0], table+"_p") {
					t.Fatalf("plan for zone %q touches %v, want exactly one partition of %s\n%s", zone, rels, table, plan)
				}
			}
		})
	}
}

func TestOnlyOnePolicyBundleIsActive(t *testing.T) {
	s, schemaDSN := openFresh(t)
	ctx := t.Context()
	if err := s.CreateZone(ctx, store.Zone{ID: "a", Name: "A"}, store.SigningKey{KID: "k"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.PutPolicyBundle(ctx, "a", map[string]string{"m": "package caracal.authz"}, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	conn := rawConn(t, schemaDSN)
	var total, active int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE active) FROM policy_bundles WHERE zone_id = 'a'`).Scan(&total, &active); err != nil {
		t.Fatal(err)
	}
	if total != 3 || active != 1 {
		t.Fatalf("zone a has %d bundles, %d active; want 3 and 1", total, active)
	}
	if code := execCode(t, conn, `INSERT INTO policy_bundles (zone_id, id, modules, active, created_at) VALUES ('a', 10, '{}', true, now())`); code != codeUniqueViolation {
		t.Fatalf("a second active bundle: SQLSTATE = %q, want %s", code, codeUniqueViolation)
	}
	if code := execCode(t, conn, `INSERT INTO signing_keys (zone_id, id, sealed, public_jwk, status, created_at) VALUES ('a', 'k2', '', '', 'active', now())`); code != codeUniqueViolation {
		t.Fatalf("a second active signing key: SQLSTATE = %q, want %s", code, codeUniqueViolation)
	}
}

func TestOpenRefusesChangedOrMissingMigrations(t *testing.T) {
	s, schemaDSN := openFresh(t)
	s.Close()
	conn := rawConn(t, schemaDSN)
	ctx := t.Context()

	mustExec(t, conn, `UPDATE schema_migrations SET sha256 = 'feedface' WHERE version = 1`)
	_, err := Open(ctx, schemaDSN)
	if err == nil || !strings.Contains(err.Error(), "0001_init.sql") || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("Open after a checksum change: err = %v, want a refusal naming 0001_init.sql", err)
	}

	files, err := loadMigrations(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, `UPDATE schema_migrations SET sha256 = $1 WHERE version = 1`, files[0].sum)
	mustExec(t, conn, `INSERT INTO schema_migrations (version, name, sha256) VALUES (9999, '9999_gone.sql', 'x')`)
	_, err = Open(ctx, schemaDSN)
	if err == nil || !strings.Contains(err.Error(), "9999_gone.sql") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open with an applied migration missing: err = %v, want a refusal naming 9999_gone.sql", err)
	}

	mustExec(t, conn, `DELETE FROM schema_migrations WHERE version = 9999`)
	s, err = Open(ctx, schemaDSN)
	if err != nil {
		t.Fatalf("Open once the records match again: %v", err)
	}
	s.Close()
}

func TestConcurrentOpensApplyEachMigrationOnce(t *testing.T) {
	ctx := t.Context()
	fresh, drop, err := testenv.CreateDatabase(ctx, "store_concurrent_open")
	if err != nil {
		t.Fatal(err)
	}
	defer drop()

	const opens = 4
	errs := make([]error, opens)
	var wg sync.WaitGroup
	for i := range opens {
		wg.Go(func() {
			s, err := Open(ctx, fresh)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
	}

	files, err := loadMigrations(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT version, name, sha256 FROM schema_migrations ORDER BY version`)
	applied, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (migration, error) {
		var m migration
		err := r.Scan(&m.version, &m.name, &m.sum)
		return m, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(files) {
		t.Fatalf("schema_migrations has %d rows, want %d", len(applied), len(files))
	}
	for i, f := range files {
		if applied[i].version != f.version || applied[i].name != f.name || applied[i].sum != f.sum {
			t.Errorf("row %d = %+v, want %s with its sha256", i, applied[i], f.name)
		}
	}
}

func TestMigrationsApplyInVersionOrderEachInItsOwnTransaction(t *testing.T) {
	schemaDSN := freshSchema(t)
	conn := rawConn(t, schemaDSN)
	ctx := t.Context()
	// 10 sorts before 9 as text; the runner must order by number, or 10 fails.
	fsys := fstest.MapFS{
		"9_parent.sql":  {Data: []byte(`CREATE TABLE parent (x int PRIMARY KEY);`)},
		"10_child.sql":  {Data: []byte(`CREATE TABLE child (x int REFERENCES parent (x));`)},
		"11_broken.sql": {Data: []byte(`CREATE TABLE half (x int); SELECT no_such_column FROM parent;`)},
		"README.md":     {Data: []byte(`not a migration`)},
	}
	files, err := loadMigrations(fsys)
	if err != nil {
		t.Fatal(err)
	}
	err = migrate(ctx, conn, files)
	if err == nil || !strings.Contains(err.Error(), "11_broken.sql") {
		t.Fatalf("migrate: err = %v, want a failure naming 11_broken.sql", err)
	}
	rows, _ := conn.Query(ctx, `SELECT name FROM schema_migrations ORDER BY applied_at, version`)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "9_parent.sql,10_child.sql" {
		t.Fatalf("applied migrations = %v, want 9_parent.sql then 10_child.sql", names)
	}
	var half *string
	if err := conn.QueryRow(ctx, `SELECT to_regclass('half')::text`).Scan(&half); err != nil {
		t.Fatal(err)
	}
	if half != nil {
		t.Fatal("the failed migration's table exists: it was not rolled back")
	}

	fsys["11_broken.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE half (x int);`)}
	if files, err = loadMigrations(fsys); err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, conn, files); err != nil {
		t.Fatalf("migrate after the fix: %v", err)
	}
}

func TestLoadMigrationsRejectsBadNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no version":        {"init.sql": {}},
		"version zero":      {"0_init.sql": {}},
		"shared version":    {"1_a.sql": {}, "01_b.sql": {}},
		"no description":    {"0001.sql": {}},
		"negative version":  {"-1_x.sql": {}},
		"letters in number": {"1a_x.sql": {}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := loadMigrations(fsys); err == nil {
				t.Fatal("loadMigrations accepted the file set")
			}
		})
	}
}

func TestUnreachableDatabaseIsUnavailable(t *testing.T) {
	ctx := t.Context()
	_, err := Open(ctx, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open against a closed port: err = %v, want store.ErrUnavailable", err)
	}

	s, _ := openFresh(t)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.GetZone(cancelled, "a")
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("GetZone with a cancelled context: err = %v, want store.ErrUnavailable wrapping context.Canceled", err)
	}
}
