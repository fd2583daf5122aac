package sts

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func TestPolicyLimitOptions(t *testing.T) {
	d := caddyfile.NewTestDispenser(`caracal_sts {
		base_url https://sts.test
		policy_max_bundle_bytes 131072
		policy_max_modules 8
		policy_max_rules 500
		policy_compile_timeout 1s
		policy_max_compilations 1
	}`)
	v, err := parseGlobal(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	var app App
	if err := json.Unmarshal(v.(httpcaddyfile.App).Value, &app); err != nil {
		t.Fatal(err)
	}
	want := PolicyConfig{MaxBundleBytes: 131072, MaxModules: 8, MaxRules: 500, CompileTimeout: caddy.Duration(time.Second), MaxCompilations: 1}
	if app.Policy != want {
		t.Fatalf("policy = %+v, want %+v", app.Policy, want)
	}
	for _, bad := range []string{"policy_max_rules 0", "policy_max_modules many", "policy_max_bundle_bytes", "policy_compile_timeout soon"} {
		_, err := parseGlobal(caddyfile.NewTestDispenser("caracal_sts {\n"+bad+"\n}"), nil)
		if err == nil {
			t.Errorf("%q: err = %v, want a refusal", bad, err)
		}
	}
}
