package postgres

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/storetest"
	"github.com/caracalgw/caracal/internal/testenv"
)

// dsn is this package's database, created by testenv.Main.
var dsn string

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, "store_postgres", &dsn))
}

var schemaSeq atomic.Int64

// freshSchema creates an empty schema in the package database and returns a
// connection string whose search_path points at it, so each test migrates and uses
// tables of its own.
func freshSchema(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t%d", schemaSeq.Add(1))
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connecting to the test database: %v", err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("creating schema %s: %v", name, err)
	}
	if strings.Contains(dsn, "://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + "search_path=" + name
	}
	return dsn + " search_path=" + name
}

// openFresh opens a store on a fresh schema and closes it when the test ends.
func openFresh(t *testing.T) (*Store, string) {
	t.Helper()
	schemaDSN := freshSchema(t)
	s, err := Open(t.Context(), schemaDSN)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, schemaDSN
}

// rawConn is a plain connection to the schema, for checks below the store's API.
func rawConn(t *testing.T, schemaDSN string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), schemaDSN)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { conn.Close(t.Context()) })
	return conn
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openFresh(t)
		return s
	})
}
