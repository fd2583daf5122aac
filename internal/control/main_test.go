package control

import (
	"context"
	"os"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/store/postgres"
	"github.com/caracalgw/caracal/internal/testenv"
)

// databaseURL is this package's own PostgreSQL database, created by TestMain.
var databaseURL string

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, "control", &databaseURL))
}

// openPostgres opens a store on the package database, emptied first: tests run one at
// a time and each starts from nothing.
func openPostgres(t testing.TB) store.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), databaseURL)
	if err != nil {
		t.Fatalf("opening PostgreSQL (run `make services`): %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	testenv.EmptyDatabase(t, databaseURL)
	return st
}

// eachStore runs f against the memory store and against PostgreSQL, so the Coordinator
// behaves the same on both.
func eachStore(t *testing.T, f func(t *testing.T, st store.Store)) {
	t.Run("memory", func(t *testing.T) { f(t, memory.New()) })
	t.Run("postgres", func(t *testing.T) { f(t, openPostgres(t)) })
}
