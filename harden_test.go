package caracal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caracalgw/caracal/internal/harden"
)

// unsetenv removes a variable for the duration of the test.
func unsetenv(t *testing.T, name string) {
	t.Setenv(name, "")
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}

// levels maps each check to the worst level it reached.
func levels(fs []harden.Finding) map[string]harden.Level {
	out := map[string]harden.Level{}
	for _, f := range fs {
		out[f.Check] = max(out[f.Check], f.Level)
	}
	return out
}

// TestHardenFailsTheDemo runs `caracal harden Caddyfile.example`: the demo must fail
// for its published secrets, its literal and {$VAR} secrets and its demo upstream, and
// pass what it does right (loopback admin, TLS in front of the gateway).
func TestHardenFailsTheDemo(t *testing.T) {
	for _, v := range []string{"CARACAL_DEMO_SECRET", "CARACAL_WORKER_SECRET", "CARACAL_HELPER_SECRET", "CARACAL_ADMIN_TOKEN"} {
		unsetenv(t, v)
	}
	fs, err := hardenFile("Caddyfile.example", "")
	if err != nil {
		t.Fatal(err)
	}
	got := levels(fs)
	want := map[string]harden.Level{
		"demo-secrets":    harden.Fail,
		"literal-secrets": harden.Fail,
		"demo-modules":    harden.Fail,
		"storage":         harden.Warn,
		"stream-key":      harden.Pass,
		"on-stale":        harden.Pass,
		"admin-endpoint":  harden.Pass,
		"mandate-tls":     harden.Pass,
	}
	for check, lvl := range want {
		if got[check] != lvl {
			t.Errorf("%s is %s, want %s", check, got[check], lvl)
		}
	}
	var substituted bool
	for _, f := range fs {
		substituted = substituted || (f.Check == "literal-secrets" && strings.HasPrefix(f.Where, "Caddyfile.example:") && strings.HasSuffix(f.Where, " bootstrap_token"))
	}
	if !substituted {
		t.Errorf("the {$CARACAL_ADMIN_TOKEN:…} line is not reported: %+v", fs)
	}
}

const productionCaddyfile = `{
	admin localhost:2019
	caracal_sts {
		base_url https://api.example.com
		storage postgres {env.CARACAL_DATABASE_URL}
		key_encryption_key {env.CARACAL_KEK}
		revocation rediss://redis.internal:6380/0 {
			stream_key {env.CARACAL_STREAM_KEY}
		}
		zone prod {
			application agent {env.AGENT_SECRET}
			resource https://api.example.com/v1 read
			policy default
		}
	}
	caracal_coordinator {
		bootstrap_token {file.%s}
	}
}

https://api.example.com {
	caracal_sts
	caracal_coordinator
	handle /v1/* {
		caracal_mandate {
			issuer https://api.example.com/zones/prod
			resource https://api.example.com/v1
			scopes read
			revocation rediss://redis.internal:6380/0 {
				stream_key {env.CARACAL_STREAM_KEY}
			}
		}
		reverse_proxy 10.0.0.9:8080
	}
}
`

// TestHardenPassesAProductionConfiguration checks that a configuration following
// docs/hardening.md gets no warning and no failure.
func TestHardenPassesAProductionConfiguration(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "admin_token")
	if err := os.WriteFile(token, []byte(strings.Repeat("x", 43)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(strings.Replace(productionCaddyfile, "%s", token, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CARACAL_DATABASE_URL", "postgres://caracal@db.internal:5432/caracal?sslmode=verify-full")
	fs, err := hardenFile(file, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.Level != harden.Pass {
			t.Errorf("%s %s %s: %s", f.Level, f.Check, f.Where, f.Message)
		}
	}
}

// TestHardenReadsJSON checks a JSON configuration, which is not adapted.
func TestHardenReadsJSON(t *testing.T) {
	file := filepath.Join(t.TempDir(), "caddy.json")
	if err := os.WriteFile(file, []byte(`{"admin":{"listen":"0.0.0.0:2019"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, err := hardenFile(file, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := levels(fs)["admin-endpoint"]; got != harden.Fail {
		t.Fatalf("admin-endpoint is %s, want FAIL", got)
	}
	if _, err := hardenFile(filepath.Join(t.TempDir(), "missing.json"), ""); err == nil {
		t.Fatal("a missing file gave no error")
	}
}
