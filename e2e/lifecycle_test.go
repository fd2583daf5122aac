package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/testenv"
)

// caracalCommand runs the binary with args and the Caddyfile text as its config, in a
// home of its own, and returns its combined output.
func caracalCommand(t *testing.T, caddyfile string, args ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, append(args, "--config", cfg, "--adapter", "caddyfile")...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// userTables counts the tables of the database's user schemas and the rows of each.
func userTables(t *testing.T, dsn string) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT schemaname, relname FROM pg_stat_user_tables`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var schema, rel string
		err := r.Scan(&schema, &rel)
		return pgx.Identifier{schema, rel}.Sanitize(), err
	})
	if err != nil {
		t.Fatal(err)
	}
	counts := make(map[string]int64, len(names))
	for _, name := range names {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		counts[name] = n
	}
	return counts
}

// TestValidateAndAdaptWriteNothing: `caracal validate` and `caracal adapt` on the full
// STS and Coordinator configuration, with declared zones, against an empty database
// leave it empty; `caracal run` on the same configuration then migrates and creates the
// declared zone at start.
func TestValidateAndAdaptWriteNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, drop, err := testenv.CreateDatabase(ctx, "e2e_validate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	caddyfile := stsCaddyfile("storage postgres " + dsn + "\n\t\tkey_encryption_key " + testKEK)

	for _, args := range [][]string{{"validate"}, {"adapt"}, {"adapt", "--validate"}} {
		out, err := caracalCommand(t, caddyfile(freePort(t), freePort(t)), args...)
		if err != nil {
			t.Fatalf("caracal %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if tables := userTables(t, dsn); len(tables) != 0 {
			t.Fatalf("after caracal %s the database has tables %v, want none", strings.Join(args, " "), tables)
		}
	}

	// The same configuration run: migrations and the declared zone are written at start.
	in := start(t, caddyfile)
	// Caddy starts its apps in any order, so the site can answer before the STS app has
	// written the declared zone; a request for the zone waits until it has.
	req, err := http.NewRequest(http.MethodGet, in.url("/zones/demo/jwks.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := in.do(t, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the demo zone's JWKS: %d %s", resp.StatusCode, body)
	}
	tables := userTables(t, dsn)
	if tables[`"public"."zones"`] != 1 || tables[`"public"."applications"`] != 2 || tables[`"public"."signing_keys"`] != 1 {
		t.Fatalf("after caracal run: %v, want the demo zone, its two applications and its key", tables)
	}
}

// TestValidateNamesAnUnreachableDatabase: a storage nothing answers fails validation with
// the server named, instead of waiting.
func TestValidateNamesAnUnreachableDatabase(t *testing.T) {
	port := freePort(t)
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/caracal?sslmode=disable", port)
	out, err := caracalCommand(t, stsCaddyfile("storage postgres "+dsn+"\n\t\tkey_encryption_key "+testKEK)(freePort(t), freePort(t)), "validate")
	if err == nil {
		t.Fatalf("caracal validate accepted an unreachable database:\n%s", out)
	}
	if want := fmt.Sprintf("PostgreSQL at 127.0.0.1:%d", port); !strings.Contains(out, want) || !strings.Contains(out, "unreachable") {
		t.Fatalf("caracal validate output does not say %q is unreachable:\n%s", want, out)
	}
}
