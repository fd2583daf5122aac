package caracal_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
