package sts

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestValidationRefusesBadZones: the zone declarations written at Start are checked when
// the configuration is only validated (Provision), so that `caracal validate` catches
// them without storage.
func TestValidationRefusesBadZones(t *testing.T) {
	badPolicy := t.TempDir()
	if err := os.WriteFile(filepath.Join(badPolicy, "authz.rego"), []byte("package caracal.authz\n\ndecision := {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		zone ZoneConfig
		want string
	}{
		{ZoneConfig{ID: "Bad Zone"}, "zone id"},
		{ZoneConfig{ID: "demo", Applications: []ApplicationConfig{{ClientID: "agent"}}}, "needs a client id and a secret"},
		{ZoneConfig{ID: "demo", Resources: []ResourceConfig{{Identifier: "https://api.test/", Scopes: []string{"read", "read"}}}}, "declared twice"},
		{ZoneConfig{ID: "demo", Resources: []ResourceConfig{{Identifier: "/relative", Scopes: []string{"read"}}}}, "absolute URI"},
		{ZoneConfig{ID: "demo", Policy: badPolicy}, "policy bundle"},
	} {
		app := App{BaseURL: "https://sts.test", Zones: []ZoneConfig{tc.zone}}
		raw, err := json.Marshal(app)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}, AppsRaw: caddy.ModuleMap{"caracal_sts": raw}}
		err = caddy.Validate(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("zone %+v: validate: %v, want an error saying %q", tc.zone, err, tc.want)
		}
	}
	// A valid declaration passes.
	raw, err := json.Marshal(App{BaseURL: "https://sts.test", Zones: []ZoneConfig{{
		ID: "demo", Policy: "default",
		Applications: []ApplicationConfig{{ClientID: "agent", Secret: "agent-secret-0123456789"}},
		Resources:    []ResourceConfig{{Identifier: "https://api.test/", Scopes: []string{"read"}}},
		Grants:       []GrantConfig{{ClientID: "agent", Resource: "https://api.test/", Scopes: []string{"read"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}, AppsRaw: caddy.ModuleMap{"caracal_sts": raw}}); err != nil {
		t.Fatalf("a valid zone: %v", err)
	}
}
