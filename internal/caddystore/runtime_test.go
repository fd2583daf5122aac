package caddystore

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/testenv"
)

// dsn is this package's database, created by testenv.Main; tests that need an empty
// database create their own with emptyDatabase.
var dsn string

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, "caddystore", &dsn)) }

// emptyDatabase creates a database of the test's own and returns its connection string.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	created, drop, err := testenv.CreateDatabase(ctx, "caddystore")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return created
}

func tableCount(t *testing.T, dsn string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_user_tables`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOneRuntimePerStorage: two apps opening the same storage share one runtime; Open
// writes nothing; store calls wait until Start has migrated, then run; the runtime
// lives until the last reference is released.
func TestOneRuntimePerStorage(t *testing.T) {
	db := emptyDatabase(t)
	cfg := Config{Driver: "postgres", DSN: db}
	sts, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	coordinator, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sts.sh != coordinator.sh || sts.Store() != coordinator.Store() {
		t.Fatal("two Opens of one storage configuration got two runtimes")
	}
	if n := tableCount(t, db); n != 0 {
		t.Fatalf("Open created %d tables, want none", n)
	}

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := coordinator.Store().ListZones(canceled); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a store call before Start whose context ended: %v, want store.ErrUnavailable", err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := coordinator.Store().ListZones(context.Background())
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("a store call returned (%v) before Start migrated the storage", err)
	default:
	}

	setupRan := false
	if err := sts.Start(func(ctx context.Context) error {
		// The start-up writes see a migrated store.
		_, err := sts.Store().ListZones(ctx)
		setupRan = err == nil
		return err
	}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !setupRan {
		t.Fatal("Start did not run its setup on a migrated store")
	}
	if err := <-waited; err != nil {
		t.Fatalf("the store call that waited for Start: %v", err)
	}
	if n := tableCount(t, db); n == 0 {
		t.Fatal("Start applied no migration")
	}

	if err := sts.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := coordinator.Store().ListZones(t.Context()); err != nil {
		t.Fatalf("the store after the other app released it: %v", err)
	}
	if err := coordinator.Release(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-coordinator.sh.closed:
	default:
		t.Fatal("the runtime is still open after its last reference was released")
	}
}

// TestUnstartedRuntimeFailsWaitingCalls: a store call waiting for a Start that never
// comes (the configuration was only validated, or failed to start) fails once the
// runtime is released.
func TestUnstartedRuntimeFailsWaitingCalls(t *testing.T) {
	rt, err := Open(Config{Driver: "postgres", DSN: emptyDatabase(t)})
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := rt.Store().GetZone(context.Background(), "demo")
		waited <- err
	}()
	if err := rt.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("the waiting store call: %v, want store.ErrUnavailable", err)
	}
}

// TestConfigSame compares storages once placeholders are expanded.
func TestConfigSame(t *testing.T) {
	t.Setenv("CARACAL_TEST_STORAGE_DSN", "postgres://db.example/caracal")
	byEnv := Config{Driver: "postgres", DSN: "{env.CARACAL_TEST_STORAGE_DSN}"}
	for _, tc := range []struct {
		a, b Config
		same bool
	}{
		{Config{}, Config{Driver: "memory"}, true},
		{byEnv, Config{Driver: "postgres", DSN: "postgres://db.example/caracal"}, true},
		{byEnv, Config{Driver: "postgres", DSN: "postgres://db.example/other"}, false},
		{byEnv, Config{}, false},
	} {
		got, err := tc.a.Same(tc.b)
		if err != nil || got != tc.same {
			t.Errorf("%+v.Same(%+v) = %v, %v; want %v", tc.a, tc.b, got, err, tc.same)
		}
	}
}
