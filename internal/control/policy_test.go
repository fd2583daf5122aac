package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

func policyBody(t testing.TB, modules map[string]string, data json.RawMessage) string {
	t.Helper()
	body := map[string]any{"modules": modules}
	if data != nil {
		body["data"] = data
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPolicyUpload(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedZone("a")
		ctx := context.Background()
		writeToken, writeID := e.mint("a", "write")
		tok, _ := e.session("a", "alice")

		// Version 1 grants alice read only; the STS has it loaded and cached.
		apiErr(t, e.exchange("a", tok, apiResource, "write"), http.StatusForbidden, "access_denied")

		t.Run("invalid bundles are refused and the active version stays", func(t *testing.T) {
			rows := len(e.pending())
			for name, c := range map[string]struct{ body, rule string }{
				"a syntax error":        {policyBody(t, map[string]string{"authz.rego": "package caracal.authz\ndecision := {"}, nil), "parsing module"},
				"no decision rule":      {policyBody(t, map[string]string{"authz.rego": "package caracal.authz\nx := 1"}, nil), "no module defines decision"},
				"no modules":            {policyBody(t, map[string]string{}, nil), "at least one Rego module"},
				"a data array":          {policyBody(t, defaultModules(), json.RawMessage(`[1]`)), "must be a JSON object"},
				"null data":             {policyBody(t, defaultModules(), json.RawMessage(`null`)), "must be a JSON object"},
				"a NUL in a module":     {policyBody(t, map[string]string{"authz.rego": "package caracal.authz\x00"}, nil), "control characters"},
				"an empty module name":  {policyBody(t, map[string]string{"": defaultModules()["authz.rego"]}, nil), "module name"},
				"modules is not a map":  {`{"modules":["package caracal.authz"]}`, `member "modules" must be an object`},
				"a module is not a str": {`{"modules":{"authz.rego":1}}`, "must be a string"},
				"a denied built-in": {policyBody(t, map[string]string{"authz.rego": "package caracal.authz\nr := json.match_schema({}, {\"$ref\": \"http://127.0.0.1:1/x\"})\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"r\": r}"}, nil),
					"calls built-in json.match_schema, which zone policies may not use"},
				"the clock": {policyBody(t, map[string]string{"authz.rego": "package caracal.authz\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\"} if time.now_ns() > 0"}, nil),
					"calls built-in time.now_ns"},
				"more rules than the limit": {policyBody(t, map[string]string{"authz.rego": defaultModules()["authz.rego"] + manyRules(2001)}, nil),
					"more than 2000 rules"},
				"a bundle over the size limit": {policyBody(t, map[string]string{"authz.rego": defaultModules()["authz.rego"] + "# " + strings.Repeat("x", 300<<10) + "\n"}, nil),
					"the limit is 262144"},
			} {
				t.Run(name, func(t *testing.T) {
					wantRule(t, e.do(http.MethodPut, "/v1/zones/a/policy", writeToken, c.body), c.rule)
				})
			}
			b, err := st.ActivePolicyBundle(ctx, "a")
			if err != nil || b.Version != 1 {
				t.Fatalf("active bundle %d, %v; want version 1", b.Version, err)
			}
			if len(e.pending()) != rows {
				t.Fatal("a refused upload queued an outbox row")
			}
		})

		rows, notified := len(e.pending()), e.notified.Load()
		var resp policyResponse
		body := policyBody(t, defaultModules(), grants(`"alice":{"`+apiResource+`":["read","write"]}`))
		decodeOK(t, e.do(http.MethodPut, "/v1/zones/a/policy", writeToken, body), http.StatusOK, &resp)
		if resp != (policyResponse{ZoneID: "a", Version: 2}) {
			t.Fatalf("response = %+v", resp)
		}
		b, err := st.ActivePolicyBundle(ctx, "a")
		if err != nil || b.Version != 2 || !strings.Contains(string(b.Data), `"write"`) {
			t.Fatalf("active bundle %+v, %v", b, err)
		}
		newRows := e.pending()[rows:]
		if len(newRows) != 1 || newRows[0].Stream != revocation.StreamPolicyInvalidate ||
			!equalJSON(newRows[0].Fields, map[string]string{"zone_id": "a", "version": "2"}) {
			t.Fatalf("outbox rows = %+v", newRows)
		}
		if e.notified.Load() != notified+1 {
			t.Fatal("the relay was not notified")
		}
		if a := e.audit("a"); a[0].Action != "policy.put" || a[0].Actor != writeID || a[0].Subject != "2" {
			t.Fatalf("audit = %+v", a[0])
		}

		// Same clock, no refresh interval passed: the STS uses version 2 at once.
		rec := e.exchange("a", tok, apiResource, "write")
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"scope":"write"`) {
			t.Fatalf("exchange after the upload: %d %s", rec.Code, rec.Body)
		}
	})
}

// manyRules is n one-line rules.
func manyRules(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "r%d := %d\n", i, i)
	}
	return b.String()
}

func TestPolicyBodyLimit(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedZone("a")
		// Larger than the 64 KiB of other endpoints, within the policy's 1 MiB.
		padding := "# " + strings.Repeat("x", 200<<10) + "\n"
		var resp policyResponse
		decodeOK(t, e.do(http.MethodPut, "/v1/zones/a/policy", bootstrapToken,
			policyBody(t, map[string]string{"authz.rego": defaultModules()["authz.rego"] + padding}, nil)), http.StatusOK, &resp)
		tooBig := policyBody(t, map[string]string{"authz.rego": defaultModules()["authz.rego"] + strings.Repeat(padding, 6)}, nil)
		wantRule(t, e.do(http.MethodPut, "/v1/zones/a/policy", bootstrapToken, tooBig), "exceeds 1048576 bytes")
		if b, _ := st.ActivePolicyBundle(context.Background(), "a"); b.Version != 2 {
			t.Fatalf("active version %d, want 2", b.Version)
		}
	})
}
