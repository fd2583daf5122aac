package caracal_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	_ "github.com/caracalgw/caracal"
)

// TestModulesRegistered checks the Go module registry against testdata/modules.txt, the
// list that scripts/check-modules.sh also checks every built binary against.
func TestModulesRegistered(t *testing.T) {
	raw, err := os.ReadFile("testdata/modules.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Fields(string(raw))
	var got []string
	for _, id := range caddy.Modules() {
		if name := caddy.ModuleID(id).Name(); name == "caracal" || strings.HasPrefix(name, "caracal_") {
			got = append(got, id)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("registered Caracal modules = %v, testdata/modules.txt lists %v", got, want)
	}
}
