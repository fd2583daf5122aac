package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestConnectChecksTheSchemaWithoutWriting: Connect on an empty schema creates nothing;
// Setup migrates and runs its function under the lock; Connect then refuses a schema
// whose applied migration changed since.
func TestConnectChecksTheSchemaWithoutWriting(t *testing.T) {
	schemaDSN := freshSchema(t)
	conn := rawConn(t, schemaDSN)
	tables := func() int {
		var n int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	s, err := Connect(t.Context(), schemaDSN)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer s.Close()
	if n := tables(); n != 0 {
		t.Fatalf("Connect created %d tables, want none", n)
	}

	ran := false
	if err := s.Setup(t.Context(), func(ctx context.Context) error {
		// The lock is held on another connection: a second one cannot take it now.
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, migrationLockKey).Scan(&got); err != nil {
			return err
		}
		if got {
			return errors.New("the advisory lock was free while Setup ran its function")
		}
		ran = true
		return nil
	}); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if !ran {
		t.Fatal("Setup did not run its function")
	}
	if n := tables(); n == 0 {
		t.Fatal("Setup applied no migration")
	}

	if _, err := conn.Exec(t.Context(), `UPDATE schema_migrations SET sha256 = 'changed' WHERE version = 1`); err != nil {
		t.Fatal(err)
	}
	again, err := Connect(t.Context(), schemaDSN)
	if err == nil {
		again.Close()
		t.Fatal("Connect accepted a schema whose applied migration changed")
	}
	if !strings.Contains(err.Error(), "has changed since it was applied") {
		t.Fatalf("Connect: %v, want the changed migration named", err)
	}
}
