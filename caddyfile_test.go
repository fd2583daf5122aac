package caracal_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caracalgw/caracal"
)

var update = flag.Bool("update", false, "rewrite the golden JSON files")

func adapt(t *testing.T, src []byte) ([]byte, error) {
	t.Helper()
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, err
	}
	if len(warnings) > 0 {
		t.Fatalf("adapter warnings: %v", warnings)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, out, "", "\t"); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	return pretty.Bytes(), nil
}

// TestCaddyfileGolden adapts every testdata/*.caddyfile (and the repository's
// Caddyfile.example) and compares the JSON with the golden file beside it.
func TestCaddyfileGolden(t *testing.T) {
	// The golden files hold the placeholders' defaults.
	if v, ok := os.LookupEnv("CARACAL_DEMO_SECRET"); ok {
		os.Unsetenv("CARACAL_DEMO_SECRET")
		t.Cleanup(func() { os.Setenv("CARACAL_DEMO_SECRET", v) })
	}
	files, err := filepath.Glob("testdata/caddyfile/*.caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "Caddyfile.example")
	for _, in := range files {
		golden := "testdata/caddyfile/" + strings.TrimSuffix(filepath.Base(in), ".caddyfile") + ".json"
		t.Run(filepath.Base(in), func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := adapt(t, src)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test . -run Golden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("adapted JSON differs from %s:\n%s", golden, got)
			}
		})
	}
}

func TestCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"unknown option":         "{\n caracal_sts {\n  nonsense 1\n }\n}\n",
		"storage driver":         "{\n caracal_sts {\n  storage mysql x\n }\n}\n",
		"postgres without dsn":   "{\n caracal_sts {\n  storage postgres\n }\n}\n",
		"bad duration":           "{\n caracal_sts {\n  mandate_lifetime soon\n }\n}\n",
		"zone without id":        "{\n caracal_sts {\n  zone {\n  }\n }\n}\n",
		"zone twice":             "{\n caracal_sts {\n  zone a\n  zone a\n }\n}\n",
		"application arity":      "{\n caracal_sts {\n  zone a {\n   application only-id\n  }\n }\n}\n",
		"resource without scope": "{\n caracal_sts {\n  zone a {\n   resource https://a.test\n  }\n }\n}\n",
		"grant without scope":    "{\n caracal_sts {\n  zone a {\n   grant c https://a.test\n  }\n }\n}\n",
		"unknown zone option":    "{\n caracal_sts {\n  zone a {\n   color blue\n  }\n }\n}\n",
		"handler arguments":      ":8080 {\n caracal_sts foo\n}\n",
		"coordinator arguments":  ":8080 {\n caracal_coordinator extra\n}\n",
		"coordinator sweep":      "{\n caracal_coordinator {\n  sweep_interval often\n }\n}\n",
		"coordinator option":     "{\n caracal_coordinator {\n  color blue\n }\n}\n",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := adapt(t, []byte(src)); err == nil {
				t.Fatal("adapted without error")
			}
		})
	}
}

// TestCaddyfileSubdirectiveErrors: unknown and repeated subdirectives are refused in
// every Caracal block, with the file and line.
func TestCaddyfileSubdirectiveErrors(t *testing.T) {
	cases := map[string]struct{ src, want string }{
		"unknown in caracal": {"{\n caracal {\n  colour blue\n }\n}\n",
			`caracal: unknown subdirective "colour", at Caddyfile:3`},
		"repeated in caracal": {"{\n caracal {\n  issuer a\n  issuer b\n }\n}\n",
			"caracal: issuer is given twice (first at Caddyfile:3), at Caddyfile:4"},
		"stream key in and beside revocation": {"{\n caracal {\n  stream_key 0123456789abcdef\n  revocation local stream_key 0123456789abcdef\n }\n}\n",
			"caracal: stream_key is given twice (first at Caddyfile:3), at Caddyfile:4"},
		"arguments on caracal": {"{\n caracal x\n}\n",
			`caracal takes no arguments, only a block, got "x", at Caddyfile:2`},
		"repeated in caracal_sts": {"{\n caracal_sts {\n  base_url a\n  leeway 1s\n  base_url b\n }\n}\n",
			"caracal_sts: base_url is given twice (first at Caddyfile:3), at Caddyfile:5"},
		"unknown in caracal_sts": {"{\n caracal_sts {\n  nonsense 1\n }\n}\n",
			`caracal_sts: unknown subdirective "nonsense", at Caddyfile:3`},
		"repeated in a zone": {"{\n caracal_sts {\n  zone a {\n   policy default\n   policy default\n  }\n }\n}\n",
			"zone a: policy is given twice (first at Caddyfile:4), at Caddyfile:5"},
		"repeated in caracal_coordinator": {"{\n caracal_coordinator {\n  sweep_interval 1s\n  sweep_interval 2s\n }\n}\n",
			"caracal_coordinator: sweep_interval is given twice (first at Caddyfile:3), at Caddyfile:4"},
		"repeated in caracal_mandate": {":8080 {\n caracal_mandate {\n  resource a\n  resource b\n }\n}\n",
			"caracal_mandate: resource is given twice (first at Caddyfile:3), at Caddyfile:4"},
		"unknown in caracal_mandate": {":8080 {\n caracal_mandate {\n  resource a\n  colour blue\n }\n}\n",
			`caracal_mandate: unknown subdirective "colour", at Caddyfile:4`},
		"repeated on a revocation line": {":8080 {\n caracal_mandate {\n  revocation local retention 1h retention 2h\n }\n}\n",
			"revocation: retention is given twice (first at Caddyfile:3), at Caddyfile:3"},
		"unknown in a revocation block": {":8080 {\n caracal_mandate {\n  revocation local {\n   colour blue\n  }\n }\n}\n",
			`revocation: unknown subdirective "colour", at Caddyfile:4`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := adapt(t, []byte(c.src))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestCaddyfileEmptyEnvironmentVariable: an unset {$VAR} leaves the option without a
// value, and the error says so and names the option, not "wrong argument count".
func TestCaddyfileEmptyEnvironmentVariable(t *testing.T) {
	const name = "CARACAL_TEST_UNSET_KEK"
	if v, ok := os.LookupEnv(name); ok {
		os.Unsetenv(name)
		t.Cleanup(func() { os.Setenv(name, v) })
	}
	_, err := adapt(t, []byte("{\n caracal_sts {\n  key_encryption_key {$"+name+"}\n }\n}\n"))
	if err == nil || !strings.Contains(err.Error(), "key_encryption_key: the value is empty") || !strings.Contains(err.Error(), "Caddyfile:3") {
		t.Fatalf("err = %v", err)
	}
	_, err = adapt(t, []byte(":8080 {\n caracal_mandate {\n  revocation redis://127.0.0.1:6379/0 stream_key {$"+name+"}\n }\n}\n"))
	if err == nil || !strings.Contains(err.Error(), "stream_key: the value is empty") {
		t.Fatalf("err = %v", err)
	}
}

// TestGlobalOptionSuppliesDefaults loads configurations without starting them: a
// caracal_mandate without an issuer is refused unless the caracal global option names
// one, and the global stream key reaches the handler's revocation pipeline (a short key
// is refused there).
func TestGlobalOptionSuppliesDefaults(t *testing.T) {
	load := func(global string) error {
		src := "{\n\tadmin off\n\tpersist_config off\n" + global + "}\n\n" +
			"http://127.0.0.1:1 {\n\tcaracal_mandate {\n\t\tresource http://api.test\n\t}\n}\n"
		cfg, err := adapt(t, []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		var c caddy.Config
		if err := json.Unmarshal(cfg, &c); err != nil {
			t.Fatal(err)
		}
		return caddy.Validate(&c)
	}
	if err := load(""); err == nil || !strings.Contains(err.Error(), "issuer is required") {
		t.Fatalf("without the global option: err = %v", err)
	}
	if err := load("\tcaracal {\n\t\tissuer https://sts.test/zones/demo\n\t\tstream_key 0123456789abcdef\n\t}\n"); err != nil {
		t.Fatalf("with the global option: %v", err)
	}
	if err := load("\tcaracal {\n\t\tissuer https://sts.test/zones/demo\n\t\tstream_key short\n\t}\n"); err == nil || !strings.Contains(err.Error(), "stream_key must be at least 16 characters") {
		t.Fatalf("a short global stream key: err = %v", err)
	}
	if err := load("\tcaracal {\n\t\tissuer https://sts.test/zones/demo\n\t\trevocation local stream_prefix p:\n\t}\n"); err == nil || !strings.Contains(err.Error(), "stream_prefix applies to Redis only") {
		t.Fatalf("a prefix on the local bus: err = %v", err)
	}
}
