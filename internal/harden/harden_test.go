package harden

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// worst returns the worst level the check reached over cfg, with its findings.
func worst(t *testing.T, check, cfg string, opts Options) (Level, []Finding) {
	t.Helper()
	fs, err := Check([]byte(cfg), opts)
	if err != nil {
		t.Fatal(err)
	}
	lvl, seen := Pass, false
	var mine []Finding
	for _, f := range fs {
		if f.Check != check {
			continue
		}
		seen = true
		mine = append(mine, f)
		lvl = max(lvl, f.Level)
	}
	if !seen {
		t.Fatalf("check %s produced no finding", check)
	}
	return lvl, mine
}

// env resolves {env.NAME} from a fixed map, leaving unknown names in place.
func env(vars map[string]string) func(string) string {
	return func(s string) string {
		return placeholderRef.ReplaceAllStringFunc(s, func(m string) string {
			sub := placeholderRef.FindStringSubmatch(m)
			if v, ok := vars[sub[2]]; ok && sub[1] == "env" {
				return v
			}
			return m
		})
	}
}

// sts wraps a caracal_sts app body in a configuration.
func sts(body string) string { return `{"apps":{"caracal_sts":{` + body + `}}}` }

// gw is a configuration with one TLS server whose route has the given caracal_mandate
// fields.
func gw(fields string) string {
	return `{"apps":{"http":{"servers":{"srv0":{"listen":[":443"],"tls_connection_policies":[{}],"routes":[{"handle":[{"handler":"subroute","routes":[{"handle":[{"handler":"caracal_mandate","issuer":"https://sts.example/zones/z","resource":"https://api.example"` + fields + `}]}]}]}]}}}}}`
}

func TestChecksTripAndPass(t *testing.T) {
	long := strings.Repeat("k", 40)
	vars := map[string]string{"TOKEN": long, "SHORT": "short-token", "DSN": "postgres://caracal@db.internal/caracal?sslmode=disable"}
	cases := []struct {
		name, check  string
		trip, pass   string
		level        Level
		opts         Options
		tripFindings int
	}{
		{name: "demo application secret", check: "demo-secrets", level: Fail,
			trip: sts(`"zones":[{"id":"z","applications":[{"client_id":"a","secret":"demo-secret-change-me"}]}]`),
			pass: sts(`"zones":[{"id":"z","applications":[{"client_id":"a","secret":"{env.A_SECRET}"}]}]`)},
		{name: "demo bootstrap token", check: "demo-secrets", level: Fail,
			trip: `{"apps":{"caracal_coordinator":{"bootstrap_token":"demo-admin-token-change-me"}}}`,
			pass: `{"apps":{"caracal_coordinator":{"bootstrap_token":"{env.TOKEN}"}}}`},
		{name: "short bootstrap token behind a placeholder", check: "demo-secrets", level: Fail,
			trip: `{"apps":{"caracal_coordinator":{"bootstrap_token":"{env.SHORT}"}}}`,
			pass: `{"apps":{"caracal_coordinator":{"bootstrap_token":"{env.TOKEN}"}}}`},
		{name: "bootstrap token not set here", check: "demo-secrets", level: Warn,
			trip: `{"apps":{"caracal_coordinator":{"bootstrap_token":"{env.UNSET}"}}}`,
			pass: `{"apps":{"caracal_coordinator":{}}}`},
		{name: "literal stream key", check: "literal-secrets", level: Fail,
			trip: sts(`"revocation":{"transport":"rediss://r.internal:6379","stream_key":"` + long + `"}`),
			pass: sts(`"revocation":{"transport":"rediss://r.internal:6379","stream_key":"{file./run/secrets/stream_key}"}`)},
		{name: "literal key encryption key", check: "literal-secrets", level: Fail,
			trip: sts(`"key_encryption_key":"` + long + `"`),
			pass: sts(`"key_encryption_key":"{env.CARACAL_KEK}"`)},
		{name: "literal bootstrap token", check: "literal-secrets", level: Fail,
			trip: `{"apps":{"caracal_coordinator":{"bootstrap_token":"` + long + `"}}}`,
			pass: `{"apps":{"caracal_coordinator":{"bootstrap_token":"{env.TOKEN}"}}}`},
		{name: "literal gateway stream key", check: "literal-secrets", level: Fail,
			trip: gw(`,"revocation":{"transport":"rediss://r.internal","stream_key":"` + long + `"}`),
			pass: gw(`,"revocation":{"transport":"rediss://r.internal","stream_key":"{env.K}"}`)},
		{name: "DSN URL with a password", check: "literal-secrets", level: Fail,
			trip: sts(`"storage":{"driver":"postgres","dsn":"postgres://caracal:hunter2@db/caracal?sslmode=verify-full"}`),
			pass: sts(`"storage":{"driver":"postgres","dsn":"postgres://caracal:{env.PGPW}@db/caracal?sslmode=verify-full"}`)},
		{name: "key/value DSN with a password", check: "literal-secrets", level: Fail,
			trip: sts(`"storage":{"driver":"postgres","dsn":"host=db user=caracal password='hunter 2' sslmode=verify-full"}`),
			pass: sts(`"storage":{"driver":"postgres","dsn":"host=db user=caracal sslmode=verify-full"}`)},
		{name: "memory storage beside Redis", check: "storage", level: Fail,
			trip: sts(`"storage":{"driver":"memory"},"revocation":{"transport":"rediss://r:6379","stream_key":"{env.K}"}`),
			pass: sts(`"storage":{"driver":"postgres","dsn":"{env.DSN}"},"revocation":{"transport":"rediss://r:6379","stream_key":"{env.K}"}`)},
		{name: "memory storage beside a gateway on Redis", check: "storage", level: Fail,
			trip: `{"apps":{"caracal_sts":{},"http":` + strings.TrimPrefix(gw(`,"revocation":{"transport":"redis://127.0.0.1:6379","stream_key":"{env.K}"}`), `{"apps":{"http":`),
			pass: `{"apps":{"caracal_sts":{"storage":{"driver":"postgres","dsn":"{env.DSN}"}},"http":` + strings.TrimPrefix(gw(`,"revocation":{"transport":"redis://127.0.0.1:6379","stream_key":"{env.K}"}`), `{"apps":{"http":`)},
		{name: "memory storage alone", check: "storage", level: Warn,
			trip: sts(``),
			pass: sts(`"storage":{"driver":"postgres","dsn":"{env.DSN}"}`)},
		{name: "Redis without stream key", check: "stream-key", level: Fail,
			trip: sts(`"revocation":{"transport":"rediss://r:6379"}`),
			pass: sts(`"revocation":{"transport":"rediss://r:6379","stream_key":"{env.K}"}`)},
		{name: "gateway on Redis without stream key", check: "stream-key", level: Fail,
			trip: gw(`,"revocation":{"transport":"redis://127.0.0.1:6379"}`),
			pass: gw(`,"revocation":{"transport":"local"}`)},
		{name: "Redis from the caracal defaults without stream key", check: "stream-key", level: Fail,
			trip: `{"apps":{"caracal":{"revocation":{"transport":"rediss://r:6379"}},"caracal_sts":{}}}`,
			pass: `{"apps":{"caracal":{"revocation":{"transport":"rediss://r:6379","stream_key":"{env.K}"}},"caracal_sts":{}}}`},
		{name: "literal stream key in the caracal defaults", check: "literal-secrets", level: Fail,
			trip: `{"apps":{"caracal":{"revocation":{"transport":"rediss://r.internal:6379","stream_key":"` + long + `"}},"caracal_sts":{}}}`,
			pass: `{"apps":{"caracal":{"revocation":{"transport":"rediss://r.internal:6379","stream_key":"{env.K}"}},"caracal_sts":{}}}`},
		{name: "plain Redis off loopback", check: "transport-tls", level: Fail,
			trip: sts(`"revocation":{"transport":"redis://10.0.0.5:6379/0","stream_key":"{env.K}"}`),
			pass: sts(`"revocation":{"transport":"redis://127.0.0.1:6379/0","stream_key":"{env.K}"}`)},
		{name: "PostgreSQL with sslmode=disable off loopback", check: "transport-tls", level: Fail,
			trip: sts(`"storage":{"driver":"postgres","dsn":"{env.DSN}"}`),
			pass: sts(`"storage":{"driver":"postgres","dsn":"postgres://caracal@127.0.0.1:5432/caracal?sslmode=disable"}`)},
		{name: "PostgreSQL that may fall back to plain text", check: "transport-tls", level: Warn,
			trip: sts(`"storage":{"driver":"postgres","dsn":"host=db.internal user=caracal"}`),
			pass: sts(`"storage":{"driver":"postgres","dsn":"host=db.internal user=caracal sslmode=verify-full"}`)},
		{name: "remote OPA over HTTP", check: "transport-tls", level: Fail,
			trip: sts(`"policy":{"remote_url":"http://opa.internal:8181"}`),
			pass: sts(`"policy":{"remote_url":"https://opa.internal:8181"}`)},
		{name: "gateway fetching keys over HTTP", check: "transport-tls", level: Fail,
			trip: `{"apps":{"http":{"servers":{"s":{"listen":[":443"],"tls_connection_policies":[{}],"routes":[{"handle":[{"handler":"caracal_mandate","issuer":"http://sts.example/zones/z","resource":"r"}]}]}}}}}`,
			pass: gw(``)},
		{name: "the caracal defaults' issuer over HTTP", check: "transport-tls", level: Fail,
			trip: `{"apps":{"caracal":{"issuer":"http://sts.example/zones/z"},"caracal_sts":{"storage":{"driver":"postgres","dsn":"host=127.0.0.1"}}}}`,
			pass: `{"apps":{"caracal":{"issuer":"https://sts.example/zones/z"},"caracal_sts":{"storage":{"driver":"postgres","dsn":"host=127.0.0.1"}}}}`},
		{name: "transport behind an unset placeholder", check: "transport-tls", level: Warn,
			trip: sts(`"revocation":{"transport":"{env.REDIS_URL}","stream_key":"{env.K}"}`),
			pass: sts(`"revocation":{"transport":"local"}`)},
		{name: "on_stale allow", check: "on-stale", level: Fail,
			trip: gw(`,"on_stale":"allow"`),
			pass: gw(`,"on_stale":"deny"`)},
		{name: "session lifetime", check: "lifetimes", level: Fail,
			trip: sts(`"session_lifetime":"48h"`),
			pass: sts(`"session_lifetime":"24h"`)},
		{name: "max session lifetime in nanoseconds", check: "lifetimes", level: Fail,
			trip: sts(`"max_session_lifetime":172800000000000`),
			pass: sts(`"max_session_lifetime":3600000000000`)},
		{name: "mandate lifetime", check: "lifetimes", level: Fail,
			trip: sts(`"mandate_lifetime":"30m"`),
			pass: sts(`"mandate_lifetime":"5m"`)},
		{name: "check_bytes far above the default", check: "check-bytes", level: Fail,
			trip: gw(`,"check_bytes":1048576`),
			pass: gw(`,"check_bytes":4096`)},
		{name: "check_bytes above the default", check: "check-bytes", level: Warn,
			trip: gw(`,"check_bytes":16384`),
			pass: gw(``)},
		{name: "admin on every interface", check: "admin-endpoint", level: Fail,
			trip: `{"admin":{"listen":":2019"}}`,
			pass: `{"admin":{"listen":"localhost:2019"}}`},
		{name: "admin on a public address", check: "admin-endpoint", level: Fail,
			trip: `{"admin":{"listen":"tcp/192.0.2.1:2019"}}`,
			pass: `{"admin":{"listen":"unix//run/caracal/admin.sock"}}`},
		{name: "admin disabled", check: "admin-endpoint", level: Fail,
			trip: `{"admin":{"listen":"0.0.0.0:2019"}}`,
			pass: `{"admin":{"disabled":true,"listen":"0.0.0.0:2019"}}`},
		{name: "plain HTTP site with a gateway", check: "mandate-tls", level: Fail,
			trip: `{"apps":{"http":{"servers":{"s":{"listen":[":80"],"routes":[{"match":[{"host":["api.example"]}],"handle":[{"handler":"caracal_mandate","issuer":"https://sts.example/zones/z","resource":"r"}]}]}}}}}`,
			pass: `{"apps":{"http":{"servers":{"s":{"listen":[":443"],"routes":[{"match":[{"host":["api.example"]}],"handle":[{"handler":"caracal_mandate","issuer":"https://sts.example/zones/z","resource":"r"}]}]}}}}}`},
		{name: "http:// site on another port", check: "mandate-tls", level: Fail,
			trip: `{"apps":{"http":{"servers":{"s":{"listen":[":8080"],"automatic_https":{"skip":["api.example"]},"routes":[{"match":[{"host":["api.example"]}],"handle":[{"handler":"caracal_mandate","issuer":"https://sts.example/zones/z","resource":"r"}]}]}}}}}`,
			pass: `{"apps":{"http":{"servers":{"s":{"listen":[":8080"],"routes":[{"match":[{"host":["api.example"]}],"handle":[{"handler":"caracal_mandate","issuer":"https://sts.example/zones/z","resource":"r"}]}]}}}}}`},
		{name: "plain HTTP gateway on loopback", check: "mandate-tls", level: Warn,
			trip: `{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:8080"],"automatic_https":{"disable":true},"routes":[{"handle":[{"handler":"caracal_mandate","issuer":"https://sts.example/zones/z","resource":"r"}]}]}}}}}`,
			pass: gw(``)},
		{name: "demo upstream", check: "demo-modules", level: Fail,
			trip: `{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:8081"],"routes":[{"handle":[{"handler":"caracal_demo_upstream"}]}]}}}}}`,
			pass: `{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:8081"],"routes":[{"handle":[{"handler":"reverse_proxy"}]}]}}}}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Resolve = env(vars)
			lvl, fs := worst(t, tc.check, tc.trip, opts)
			if lvl != tc.level {
				t.Errorf("trip config: %s is %s, want %s: %+v", tc.check, lvl, tc.level, fs)
			}
			for _, f := range fs {
				if f.Level != Pass && (f.Fix == "" || f.Where == "") {
					t.Errorf("finding without where or fix: %+v", f)
				}
			}
			if lvl, fs := worst(t, tc.check, tc.pass, opts); lvl != Pass {
				t.Errorf("pass config: %s is %s: %+v", tc.check, lvl, fs)
			}
		})
	}
}

func TestCaddyfileSubstitutedSecrets(t *testing.T) {
	const cfg = `{"apps":{"caracal_coordinator":{"bootstrap_token":"{env.TOKEN}"}}}`
	cases := []struct {
		name, caddyfile string
		want            Level
	}{
		{"bootstrap token from {$VAR}", "{\n\tcaracal_coordinator {\n\t\tbootstrap_token {$TOKEN}\n\t}\n}\n", Fail},
		{"application secret with a default", "{\n\tcaracal_sts {\n\t\tzone z {\n\t\t\tapplication a {$A:dflt}\n\t\t}\n\t}\n}\n", Fail},
		{"stream key in a revocation block", "{\n\tcaracal_sts {\n\t\trevocation rediss://r {\n\t\t\tstream_key {$K}\n\t\t}\n\t}\n}\n", Fail},
		{"DSN from {$VAR}", "{\n\tcaracal_sts {\n\t\tstorage postgres {$DSN}\n\t}\n}\n", Warn},
		{"runtime placeholders", "{\n\tcaracal_coordinator {\n\t\tbootstrap_token {env.TOKEN}\n\t}\n\tcaracal_sts {\n\t\tbase_url {$BASE}\n\t\tzone z {\n\t\t\tapplication {$ID} {env.A}\n\t\t}\n\t}\n}\n", Pass},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Caddyfile: []byte(tc.caddyfile), Filename: "Caddyfile", Resolve: env(map[string]string{"TOKEN": strings.Repeat("t", 40)})}
			if lvl, fs := worst(t, "literal-secrets", cfg, opts); lvl != tc.want {
				t.Errorf("literal-secrets is %s, want %s: %+v", lvl, tc.want, fs)
			}
		})
	}
}

func TestCheckRefusesInvalidJSON(t *testing.T) {
	if _, err := Check([]byte(`{"apps":`), Options{}); err == nil {
		t.Fatal("Check accepted truncated JSON")
	}
}

func TestResolveFromEnvironment(t *testing.T) {
	t.Setenv("HARDEN_TEST_SET", "value")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := ResolveFromEnvironment("{env.HARDEN_TEST_SET}|{env.HARDEN_TEST_UNSET_VARIABLE}|{file." + file + "}|{file./nonexistent/x}")
	want := "value|{env.HARDEN_TEST_UNSET_VARIABLE}|from-file|{file./nonexistent/x}"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestPrintNeverShowsSecrets(t *testing.T) {
	const secret = "s3cr3t-value-that-must-not-print-change-me"
	cfg := `{"apps":{"caracal_coordinator":{"bootstrap_token":"` + secret + `"},"caracal_sts":{"storage":{"driver":"postgres","dsn":"postgres://u:` + secret + `@db/x"}}}}`
	fs, err := Check([]byte(cfg), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Print(&out, fs); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cr3t") {
		t.Fatalf("output shows the secret:\n%s", out.String())
	}
	if Failed(fs) == 0 || !strings.Contains(out.String(), "FAIL  demo-secrets") {
		t.Fatalf("no failure printed:\n%s", out.String())
	}
}
