package issuer

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
	os.Exit(testenv.Main(m, "issuer", &databaseURL))
}

// openPostgres opens a store on the package database; each caller gets fresh zones
// because the harness creates them, so tests sharing the database use different
// zone ids through newEnvIn.
func openPostgres(t testing.TB) store.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), databaseURL)
	if err != nil {
		t.Fatalf("opening PostgreSQL (run `make services`): %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// eachStore runs f against the memory store and against PostgreSQL (emptied first), so
// the STS behaves the same on both.
func eachStore(t *testing.T, f func(t *testing.T, open func() store.Store)) {
	t.Run("memory", func(t *testing.T) {
		f(t, func() store.Store { return memory.New() })
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, func() store.Store {
			st := openPostgres(t) // applies the migrations on first use
			testenv.EmptyDatabase(t, databaseURL)
			return st
		})
	})
}
