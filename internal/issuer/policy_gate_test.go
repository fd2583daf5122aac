package issuer

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/policies"
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
		b, err := st.PutPolicyBundle(ctx, "demo", modules, json.RawMessage(data), e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		// Another process activated it: this STS sees it after the refresh interval and
		// compiles it in the background, answering with the previous version meanwhile.
		e.clock.Advance(DefaultRefreshInterval)
		exchange()
		waitPolicy(t, e.svc, "demo", b.Version)
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
			body := oauthErr(t, e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read")}), 403, CodeAccessDenied)
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
		body := oauthErr(t, e.do(call{path: "/zones/bare/oauth2/token", form: exchangeForm(bareSubject)}), 403, CodeAccessDenied)
		if !strings.Contains(body["error_description"], "no active policy") {
			t.Fatalf("error_description %q", body["error_description"])
		}
	})
}

// TestExchangesNeverWaitForACompilation activates a bundle whose compilation blocks
// in the compiler's hook: the exchanges that see it keep being answered with the
// previous version, and the new one applies once it has compiled.
func TestExchangesNeverWaitForACompilation(t *testing.T) {
	var armed atomic.Bool
	started, release := make(chan struct{}, 1), make(chan struct{})
	compiler := policy.NewCompiler(policy.CompilerOptions{
		Limits: policy.Limits{CompileTimeout: time.Minute},
		BeforeCompile: func(string) {
			if armed.Load() {
				started <- struct{}{}
				<-release
			}
		},
	})
	st := memory.New()
	e := newEnv(t, st, func(o *Options) {
		o.Compiler = compiler
		o.Policy = policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Second, Compiler: compiler})
	})
	subject := e.session("demo", "agent")
	exchange := func() int {
		done := make(chan int, 1)
		go func() {
			done <- e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read")}).Code
		}()
		select {
		case code := <-done:
			return code
		case <-time.After(10 * time.Second):
			t.Fatal("an exchange waited for the compilation")
			return 0
		}
	}
	if code := exchange(); code != 200 {
		t.Fatalf("baseline exchange: %d", code)
	}
	armed.Store(true)
	b, err := st.PutPolicyBundle(t.Context(), "demo", map[string]string{"p.rego": "package caracal.authz\n\ndecision := {\"decision\": \"deny\", \"evaluation_status\": \"complete\", \"reasons\": [\"v2\"]}\n"}, json.RawMessage(`{}`), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(DefaultRefreshInterval)
	if code := exchange(); code != 200 {
		t.Fatalf("exchange that saw the new version: %d, want 200 from the previous one", code)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the new version's compilation never started")
	}
	for range 3 {
		if code := exchange(); code != 200 {
			t.Fatalf("exchange during the compilation: %d, want 200 from the previous version", code)
		}
	}
	close(release)
	waitPolicy(t, e.svc, "demo", b.Version)
	if code := exchange(); code != 403 {
		t.Fatalf("exchange after the compilation: %d, want 403 from the new version", code)
	}
}

// TestBootstrapInstallsTheBundleCompiledAtCheck: a declared bundle that the STS already
// compiled while checking its configuration is installed as it is, not compiled again;
// one declared without it is compiled by Bootstrap.
func TestBootstrapInstallsTheBundleCompiledAtCheck(t *testing.T) {
	var mu sync.Mutex
	compiles := map[string]int{}
	compiler := policy.NewCompiler(policy.CompilerOptions{
		Limits: policy.Limits{CompileTimeout: time.Minute},
		BeforeCompile: func(zoneID string) {
			mu.Lock()
			compiles[zoneID]++
			mu.Unlock()
		},
	})
	e := newEnv(t, memory.New(), func(o *Options) {
		o.Compiler = compiler
		o.Policy = policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Second, Compiler: compiler})
	})
	modules, _ := policies.Default()
	data := json.RawMessage(`{"grants":{}}`)
	ctx := t.Context()
	compiled, err := e.svc.CompilePolicy(ctx, "checked", modules, data)
	if err != nil {
		t.Fatal(err)
	}
	specs := []ZoneSpec{
		{ID: "checked", Name: "checked", Policy: &PolicySpec{Modules: modules, Data: data, Compiled: compiled}},
		{ID: "unchecked", Name: "unchecked", Policy: &PolicySpec{Modules: modules, Data: data}},
	}
	if err := e.svc.Bootstrap(ctx, specs); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if compiles["checked"] != 1 || compiles["unchecked"] != 1 {
		t.Fatalf("compilations per zone %v, want one each", compiles)
	}
	for _, z := range []string{"checked", "unchecked"} {
		if v, ok := e.svc.policy.Version(z); !ok || v != 1 {
			t.Fatalf("zone %s: installed policy version %d, %v; want 1", z, v, ok)
		}
	}
}

// TestBootstrapResourceIDs: a declared resource gets an id of the same form as one created
// through the Coordinator, and keeps it when the declaration is applied again.
func TestBootstrapResourceIDs(t *testing.T) {
	st := memory.New()
	e := newEnv(t, st)
	spec := []ZoneSpec{{ID: "declared", Name: "declared", Resources: []ResourceSpec{{Identifier: "https://declared.test/api", Scopes: []string{"read"}}}}}
	ctx := t.Context()
	if err := e.svc.Bootstrap(ctx, spec); err != nil {
		t.Fatal(err)
	}
	first, err := st.GetResource(ctx, "declared", "https://declared.test/api")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first.ID, store.ResourceIDPrefix) || !mandate.ValidRecordID(first.ID) {
		t.Fatalf("declared resource id %q, want %s followed by a record id", first.ID, store.ResourceIDPrefix)
	}
	if err := e.svc.Bootstrap(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if again, err := st.GetResource(ctx, "declared", "https://declared.test/api"); err != nil || again.ID != first.ID {
		t.Fatalf("after a second bootstrap: %+v, %v; want id %q", again, err, first.ID)
	}
}
