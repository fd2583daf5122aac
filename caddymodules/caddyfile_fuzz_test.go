package caddymodules

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzMandateCaddyfile feeds arbitrary directives to the caracal_mandate parser: it
// never panics, a refusal names the line, and what it accepts survives a JSON round
// trip unchanged (the adapter hands Caddy the JSON form).
func FuzzMandateCaddyfile(f *testing.F) {
	for _, seed := range []string{
		"caracal_mandate {\n issuer https://sts.test/zones/demo\n resource https://api.test\n scopes read write\n}",
		"caracal_mandate {\n revocation redis://127.0.0.1:6379/0 stream_key 0123456789abcdef stream_prefix p: retention 2h\n}",
		"caracal_mandate {\n revocation local {\n  stream_key 0123456789abcdef\n  retention 1h\n }\n exchange {\n  renew_before 10s\n }\n}",
		"caracal_mandate {\n forward_mandate off\n end_on_expiry on\n reject_stale_epoch\n check_bytes 8192\n on_stale allow\n}",
		"caracal_mandate {\n issuer a\n issuer b\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tokens, err := caddyfile.Tokenize([]byte(src), "Fuzzfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens)); err != nil {
			if !strings.Contains(err.Error(), "Fuzzfile:") {
				t.Fatalf("refusal without a line: %v", err)
			}
			return
		}
		first, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		var back Handler
		if err := json.Unmarshal(first, &back); err != nil {
			t.Fatalf("accepted config does not read back: %v\n%s", err, first)
		}
		second, err := json.Marshal(&back)
		if err != nil {
			t.Fatal(err)
		}
		if string(first) != string(second) {
			t.Fatalf("JSON round trip changed the config:\n%s\n%s", first, second)
		}
	})
}
