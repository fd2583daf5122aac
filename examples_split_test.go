package caracal_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestSplitExampleAdapts adapts the Caddyfiles of examples/split: the STS node sets a
// key activation delay, and each gateway trusts the STS's CA for its key fetches.
func TestSplitExampleAdapts(t *testing.T) {
	files, err := filepath.Glob("examples/split/*.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("examples/split holds %d Caddyfiles, want 3 (STS node, two gateways)", len(files))
	}
	for k, v := range map[string]string{
		"CARACAL_KEK": "MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=", "CARACAL_STREAM_KEY": "example-stream-key-0123456789",
		"CARACAL_ADMIN_TOKEN": "example-admin-token-0123456789", "CARACAL_AGENT_SECRET": "example-agent-secret",
		"CARACAL_STS_ROOT": "/etc/caracal/sts-root.crt",
	} {
		t.Setenv(k, v)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := adapt(t, src)
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Apps struct {
					STS *struct {
						KeyActivationDelay int64 `json:"key_activation_delay"`
					} `json:"caracal_sts"`
					HTTP struct {
						Servers map[string]json.RawMessage `json:"servers"`
					} `json:"http"`
				} `json:"apps"`
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			if filepath.Base(f) == "sts.Caddyfile" {
				if cfg.Apps.STS == nil || cfg.Apps.STS.KeyActivationDelay == 0 {
					t.Fatalf("the STS node sets no key_activation_delay:\n%s", out)
				}
				return
			}
			if cfg.Apps.STS != nil {
				t.Fatal("a gateway node runs an STS")
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(compact.Bytes(), []byte(`"tls_trust_pool":{"pem_files":["/etc/caracal/sts-root.crt"],"provider":"file"}`)) {
				t.Fatalf("the gateway does not trust the STS's CA through tls_trust_pool:\n%s", out)
			}
		})
	}
}
