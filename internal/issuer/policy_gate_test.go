package issuer

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/testenv"
)

func TestPolicyGateDeniesOnEveryFailureMode(t *testing.T) {
	st := memory.New()
	e := newEnv(t, st)
	ctx := context.Background()
	subject := e.session("demo", "agent")
	exchange := func() *http.Response {
		return e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read")}).Result()
	}
	activate := func(t *testing.T, modules map[string]string, data string) {
		t.Helper()
		if _, err := st.PutPolicyBundle(ctx, "demo", modules, json.RawMessage(data), e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		// Another process activated it: this STS sees it after the refresh interval.
		e.clock.Advance(DefaultRefreshInterval)
	}
	if r := exchange(); r.StatusCode != 200 {
		t.Fatalf("baseline exchange: %d", r.StatusCode)
	}
	cases := []struct {
		name    string
		modules map[string]string
		want    string
	}{
		{"a bundle that fails to compile", map[string]string{"p.rego": "package caracal.authz\n decision := {"}, "compile"},
		{"a decision that is undefined", map[string]string{"p.rego": `package caracal.authz
decision := {"decision": "allow", "evaluation_status": "complete"} if input.nonexistent`}, "undefined"},
		{"allow without complete", map[string]string{"p.rego": `package caracal.authz
decision := {"decision": "allow", "evaluation_status": "partial"}`}, ""},
		{"a decision of the wrong shape", map[string]string{"p.rego": `package caracal.authz
decision := "allow"`}, ""},
		{"an explicit deny", map[string]string{"p.rego": `package caracal.authz
decision := {"decision": "deny", "evaluation_status": "complete", "reasons": ["closed for maintenance"]}`}, "closed for maintenance"},
		{"an evaluation error", map[string]string{"p.rego": `package caracal.authz
decision := {"decision": "allow", "evaluation_status": "complete"} if { to_number("x") > 0 }`}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is access_denied", func(t *testing.T) {
			activate(t, tc.modules, `{}`)
			body := oauthErr(t, e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read")}), 403, codeAccessDenied)
			if tc.want != "" && !strings.Contains(body["error_description"], tc.want) {
				t.Fatalf("error_description %q does not mention %q", body["error_description"], tc.want)
			}
		})
	}
	t.Run("a permissive bundle activated later is picked up", func(t *testing.T) {
		activate(t, map[string]string{"p.rego": `package caracal.authz
decision := {"decision": "allow", "evaluation_status": "complete"}`}, `{}`)
		if r := exchange(); r.StatusCode != 200 {
			t.Fatalf("exchange after activation: %d", r.StatusCode)
		}
	})
	t.Run("a zone without any bundle is deny-all", func(t *testing.T) {
		if err := e.svc.CreateZone(ctx, "bare", "bare"); err != nil {
			t.Fatal(err)
		}
		if err := st.PutApplication(ctx, store.Application{ZoneID: "bare", ClientID: "agent", Name: "agent", SecretHash: testenv.CheapSecretHash("bare-agent-secret")}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutResource(ctx, store.Resource{ZoneID: "bare", ID: "r", Identifier: apiResource, Scopes: []string{"read"}}); err != nil {
			t.Fatal(err)
		}
		bareSubject := e.session("bare", "agent")
		body := oauthErr(t, e.do(call{path: "/zones/bare/oauth2/token", form: exchangeForm(bareSubject)}), 403, codeAccessDenied)
		if !strings.Contains(body["error_description"], "no active policy") {
			t.Fatalf("error_description %q", body["error_description"])
		}
	})
}
