package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/policies"
)

const invoices = "https://api.example.com/invoices"

// roomy is the timeout for tests about anything but timeouts: generous enough that
// a loaded machine never turns an expected decision into a timeout deny.
const roomy = 10 * time.Second

func newEngine() *policy.Embedded {
	return policy.NewEmbedded(policy.EmbeddedOptions{Timeout: roomy})
}

// exchange is a token exchange by client asking for scopes on the invoices API.
func exchange(client string, scopes ...string) *policy.Input {
	return &policy.Input{
		ZoneID:          "acme",
		Action:          policy.ActionTokenExchange,
		Client:          policy.Client{ID: client},
		Session:         policy.Session{SID: "s-2", RootSID: "s-1"},
		Resource:        policy.Resource{Identifier: invoices, Scopes: []string{"invoices:read", "invoices:write", "invoices:delete"}},
		RequestedScopes: scopes,
		Time:            1767225600,
	}
}

func defaultBundle(zone string, version int64) *store.PolicyBundle {
	modules, data := policies.Default()
	return &store.PolicyBundle{ZoneID: zone, Version: version, Modules: modules, Data: data, Active: true}
}

// bundle wraps a single authz.rego module.
func bundle(zone string, version int64, rego string) *store.PolicyBundle {
	return &store.PolicyBundle{ZoneID: zone, Version: version, Modules: map[string]string{"authz.rego": rego}}
}

// loaded returns an engine with src installed for zone "acme" as version 1.
func loaded(t *testing.T, src string) *policy.Embedded {
	t.Helper()
	e := newEngine()
	if err := e.Load(t.Context(), "acme", bundle("acme", 1, src)); err != nil {
		t.Fatalf("loading test policy: %v", err)
	}
	return e
}

func TestEmbeddedAllowsWithTheDefaultBundle(t *testing.T) {
	e := newEngine()
	if err := e.Load(t.Context(), "acme", defaultBundle("acme", 1)); err != nil {
		t.Fatal(err)
	}

	t.Run("a granted client gets the granted part of its request", func(t *testing.T) {
		// support-agent is granted invoices:read only in policies/default/data.json.
		d := e.Evaluate(t.Context(), "acme", exchange("support-agent", "invoices:read", "invoices:write"))
		if !d.Allow || !d.HasScopes || strings.Join(d.Scopes, " ") != "invoices:read" {
			t.Fatalf("decision = %+v, want allow narrowed to invoices:read", d)
		}
		// The default bundle's allow path builds no strings: it is evaluated on every exchange.
		if d.Reason != "" || len(d.Reasons) != 0 {
			t.Fatalf("decision = %+v, want neither a deny reason nor policy reasons", d)
		}
	})
	t.Run("a delegatee is judged by the root client's grants", func(t *testing.T) {
		in := exchange("unregistered-helper", "invoices:write")
		in.Delegation = &policy.Delegation{
			EdgeID: "e-1", Path: []string{"e-1"}, HopCount: 1, Scopes: []string{"invoices:write"},
			ExpiresAt: in.Time + 600, Epoch: 3, RootClientID: "billing-agent",
		}
		d := e.Evaluate(t.Context(), "acme", in)
		if !d.Allow || strings.Join(d.Scopes, " ") != "invoices:write" {
			t.Fatalf("decision = %+v, want allow with invoices:write", d)
		}
	})
	t.Run("a client without a grant is denied with the policy's reason", func(t *testing.T) {
		d := e.Evaluate(t.Context(), "acme", exchange("stranger", "invoices:read"))
		want := `policy denied: client "stranger" has no grant on "https://api.example.com/invoices"`
		if d.Allow || d.Reason != want {
			t.Fatalf("decision = %+v, want deny %q", d, want)
		}
	})
	t.Run("another zone has no bundle and is deny-all", func(t *testing.T) {
		d := e.Evaluate(t.Context(), "other", exchange("billing-agent", "invoices:read"))
		if d.Allow || d.Reason != "no active policy bundle for zone" {
			t.Fatalf("decision = %+v", d)
		}
	})
}

const allowAll = `package caracal.authz

decision := {"decision": "allow", "evaluation_status": "complete"}
`

func TestEmbeddedDenyModes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		policy   string
		nilInput bool
		zone     string // input.zone_id when not "acme"
		reason   string // exact, or a prefix when it ends in "..."
	}{
		{
			name:   "an undefined decision",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\"} if input.client.id == \"root\"\n",
			reason: "policy result undefined",
		},
		{
			name:   "a decision that is not an object",
			policy: "package caracal.authz\n\ndecision := \"allow\"\n",
			reason: "policy result malformed: not an object",
		},
		{
			name:   "a decision that is a boolean",
			policy: "package caracal.authz\n\ndecision := true\n",
			reason: "policy result malformed: not an object",
		},
		{
			name:   "an unknown verdict",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"yes\", \"evaluation_status\": \"complete\"}\n",
			reason: `policy result malformed: "decision" must be "allow" or "deny"`,
		},
		{
			name:   "a missing verdict",
			policy: "package caracal.authz\n\ndecision := {\"evaluation_status\": \"complete\"}\n",
			reason: `policy result malformed: "decision" must be "allow" or "deny"`,
		},
		{
			name:   "an allow whose evaluation is partial",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"partial\"}\n",
			reason: `policy evaluation incomplete (evaluation_status "partial")`,
		},
		{
			name:   "an allow without evaluation_status",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\"}\n",
			reason: `policy evaluation incomplete (evaluation_status "")`,
		},
		{
			name:   "an allow whose scopes is a string",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"scopes\": \"invoices:read\"}\n",
			reason: `policy result malformed: "scopes" must be an array of strings`,
		},
		{
			name:   "an allow whose scopes holds a number",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"scopes\": [\"a\", 1]}\n",
			reason: `policy result malformed: "scopes" must be an array of strings`,
		},
		{
			name:   "an allow whose reasons is an object",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"reasons\": {\"a\": 1}}\n",
			reason: `policy result malformed: "reasons" must be an array of strings`,
		},
		{
			name:   "an explicit deny, with its reasons",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"deny\", \"evaluation_status\": \"complete\", \"reasons\": [\"too late\", \"wrong team\"]}\n",
			reason: "policy denied: too late; wrong team",
		},
		{
			name:   "an explicit deny without reasons",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"deny\", \"evaluation_status\": \"complete\"}\n",
			reason: "policy denied",
		},
		{
			name: "a conflict between complete rules",
			policy: `package caracal.authz

decision := {"decision": "allow", "evaluation_status": "complete"} if input.client.id != ""

decision := {"decision": "deny", "evaluation_status": "complete"} if input.action == "token_exchange"
`,
			reason: "policy evaluation failed: ...",
		},
		{
			// Without strict built-in errors to_number's failure would leave
			// over_limit undefined, and the negation would allow.
			name: "a built-in error under a negation",
			policy: `package caracal.authz

over_limit if to_number(input.client.id) > 10

decision := {"decision": "allow", "evaluation_status": "complete"} if not over_limit
`,
			reason: "policy evaluation failed: ...",
		},
		{
			name:   "an input for another zone",
			policy: allowAll,
			zone:   "globex",
			reason: "policy input is for another zone",
		},
		{
			name:     "a nil input",
			policy:   allowAll,
			nilInput: true,
			reason:   "policy input missing",
		},
	} {
		t.Run("it denies "+tc.name, func(t *testing.T) {
			e := loaded(t, tc.policy)
			in := exchange("billing-agent", "invoices:read")
			if tc.zone != "" {
				in.ZoneID = tc.zone
			}
			if tc.nilInput {
				in = nil
			}
			d := e.Evaluate(t.Context(), "acme", in)
			if d.Allow {
				t.Fatalf("decision = %+v, want deny", d)
			}
			assertReason(t, d.Reason, tc.reason)
		})
	}
}

func assertReason(t *testing.T, got, want string) {
	t.Helper()
	if prefix, ok := strings.CutSuffix(want, "..."); ok {
		if !strings.HasPrefix(got, prefix) || len(got) == len(prefix) {
			t.Fatalf("reason = %q, want %q followed by details", got, prefix)
		}
		return
	}
	if got != want {
		t.Fatalf("reason = %q, want %q", got, want)
	}
}

func TestEmbeddedTimesOutASlowPolicy(t *testing.T) {
	// Ten billion iterations: it only ends because the deadline cancels it. The
	// engine runs with the default timeout.
	e := policy.NewEmbedded(policy.EmbeddedOptions{})
	err := e.Load(t.Context(), "acme", bundle("acme", 1, `package caracal.authz

decision := {"decision": "allow", "evaluation_status": "complete"} if {
	count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j; x < 0]) == 0
}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := e.Evaluate(t.Context(), "acme", exchange("billing-agent", "invoices:read"))
	if d.Allow || d.Reason != "policy evaluation timed out" {
		t.Fatalf("decision = %+v, want a timeout deny", d)
	}
}

func TestEmbeddedHonoursACancelledCaller(t *testing.T) {
	e := loaded(t, allowAll)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d := e.Evaluate(ctx, "acme", exchange("billing-agent", "invoices:read"))
	if d.Allow || d.Reason != "policy evaluation cancelled" {
		t.Fatalf("decision = %+v, want a cancellation deny", d)
	}
}

// echoInput returns the input document as the policy saw it, in its only reason.
const echoInput = `package caracal.authz

decision := {"decision": "deny", "evaluation_status": "complete", "reasons": [json.marshal(input)]}
`

// wantInputJSON is exchange("billing-agent") with a delegation, as encoding/json
// would write it except that absent lists are [] rather than null.
const wantInputJSON = `{"action":"token_exchange","client":{"id":"billing-agent"},` +
	`"delegation":{"edge_id":"e-9","epoch":12,"expires_at":1767229200,"hop_count":2,"path":["e-1","e-9"],"root_client_id":"root-agent","scopes":["invoices:read"]},` +
	`"requested_scopes":[],"resource":{"identifier":"https://api.example.com/invoices","scopes":["invoices:read","invoices:write","invoices:delete"]},` +
	`"session":{"root_sid":"s-1","sid":"s-2"},"time":1767225600,"zone_id":"acme"}`

func echoedInput() *policy.Input {
	in := exchange("billing-agent")
	in.Delegation = &policy.Delegation{
		EdgeID: "e-9", Path: []string{"e-1", "e-9"}, HopCount: 2, Scopes: []string{"invoices:read"},
		ExpiresAt: 1767229200, Epoch: 12, RootClientID: "root-agent",
	}
	return in
}

func TestEmbeddedInputDocument(t *testing.T) {
	e := loaded(t, echoInput)
	d := e.Evaluate(t.Context(), "acme", echoedInput())
	if len(d.Reasons) != 1 || d.Reasons[0] != wantInputJSON {
		t.Fatalf("policy saw input\n%v\nwant\n%s", d.Reasons, wantInputJSON)
	}

	t.Run("it has the struct's JSON names", func(t *testing.T) {
		in := echoedInput()
		in.RequestedScopes = []string{}
		raw, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var fromStruct, fromPolicy any
		if err := json.Unmarshal(raw, &fromStruct); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(d.Reasons[0]), &fromPolicy); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(fromStruct) != fmt.Sprint(fromPolicy) {
			t.Fatalf("struct marshals to %v, policy saw %v", fromStruct, fromPolicy)
		}
	})
	t.Run("a missing delegation is null", func(t *testing.T) {
		e := loaded(t, `package caracal.authz

decision := {"decision": "allow", "evaluation_status": "complete"} if input.delegation == null
`)
		if d := e.Evaluate(t.Context(), "acme", exchange("billing-agent")); !d.Allow {
			t.Fatalf("decision = %+v, want allow", d)
		}
	})
}

func TestEmbeddedBundleLifecycle(t *testing.T) {
	ctx := t.Context()
	e := newEngine()
	in := exchange("billing-agent", "invoices:read")
	if _, ok := e.Version("acme"); ok {
		t.Fatal("a new engine reports a version")
	}

	if err := e.Load(ctx, "acme", bundle("acme", 1, allowAll)); err != nil {
		t.Fatal(err)
	}
	if d := e.Evaluate(ctx, "acme", in); !d.Allow {
		t.Fatalf("v1: decision = %+v, want allow", d)
	}

	denyV2 := "package caracal.authz\n\ndecision := {\"decision\": \"deny\", \"evaluation_status\": \"complete\", \"reasons\": [\"v2\"]}\n"
	if err := e.Load(ctx, "acme", bundle("acme", 2, denyV2)); err != nil {
		t.Fatal(err)
	}
	if d := e.Evaluate(ctx, "acme", in); d.Allow || d.Reason != "policy denied: v2" {
		t.Fatalf("v2: decision = %+v, want deny v2", d)
	}
	if v, ok := e.Version("acme"); !ok || v != 2 {
		t.Fatalf("Version = %d, %v; want 2, true", v, ok)
	}

	t.Run("reloading the installed version does not recompile", func(t *testing.T) {
		if err := e.Load(ctx, "acme", bundle("acme", 2, "not rego at all")); err != nil {
			t.Fatalf("Load of the installed version = %v, want nil (no-op)", err)
		}
		if d := e.Evaluate(ctx, "acme", in); d.Reason != "policy denied: v2" {
			t.Fatalf("decision = %+v, want v2 still installed", d)
		}
	})

	t.Run("a bundle that fails to compile makes the zone deny-all", func(t *testing.T) {
		err := e.Load(ctx, "acme", bundle("acme", 3, "package caracal.authz\n\ndecision := {\"decision\": \"allow\" \n"))
		if err == nil {
			t.Fatal("Load of a broken bundle = nil")
		}
		d := e.Evaluate(ctx, "acme", in)
		if d.Allow || !strings.HasPrefix(d.Reason, "policy bundle failed to compile: parsing module \"authz.rego\"") {
			t.Fatalf("decision = %+v, want a compile-failure deny", d)
		}
		if v, _ := e.Version("acme"); v != 3 {
			t.Fatalf("Version = %d, want the failed version 3", v)
		}
		if again := e.Load(ctx, "acme", bundle("acme", 3, "package caracal.authz\n\ndecision := {\"decision\": \"allow\" \n")); again == nil || again.Error() != err.Error() {
			t.Fatalf("reloading the failed version = %v, want %v", again, err)
		}
	})

	t.Run("a later good version recovers the zone", func(t *testing.T) {
		if err := e.Load(ctx, "acme", bundle("acme", 4, allowAll)); err != nil {
			t.Fatal(err)
		}
		if d := e.Evaluate(ctx, "acme", in); !d.Allow {
			t.Fatalf("decision = %+v, want allow", d)
		}
	})

	t.Run("a bundle of another zone is refused", func(t *testing.T) {
		if err := e.Load(ctx, "acme", bundle("globex", 5, allowAll)); err == nil || !strings.Contains(err.Error(), `zone "globex"`) {
			t.Fatalf("Load = %v, want a zone mismatch error", err)
		}
		if d := e.Evaluate(ctx, "acme", in); d.Allow || d.Reason != "no active policy bundle for zone" {
			t.Fatalf("decision = %+v, want deny-all after a mismatched bundle", d)
		}
		if err := e.Load(ctx, "acme", bundle("acme", 5, allowAll)); err != nil {
			t.Fatalf("loading the zone's own version 5 after the mismatch: %v", err)
		}
		if d := e.Evaluate(ctx, "acme", in); !d.Allow {
			t.Fatalf("decision = %+v, want allow from the zone's own bundle", d)
		}
	})

	t.Run("removing the bundle makes the zone deny-all", func(t *testing.T) {
		if err := e.Load(ctx, "acme", nil); err != nil {
			t.Fatal(err)
		}
		if d := e.Evaluate(ctx, "acme", in); d.Allow || d.Reason != "no active policy bundle for zone" {
			t.Fatalf("decision = %+v", d)
		}
		if _, ok := e.Version("acme"); ok {
			t.Fatal("Version reports a removed bundle")
		}
	})

	t.Run("a recreated zone may start again at version 1", func(t *testing.T) {
		if err := e.Load(ctx, "acme", bundle("acme", 1, allowAll)); err != nil {
			t.Fatal(err)
		}
		if d := e.Evaluate(ctx, "acme", in); !d.Allow {
			t.Fatalf("decision = %+v, want allow", d)
		}
	})
}

// TestEmbeddedConcurrentEvaluateAndLoad runs under -race: evaluations racing bundle
// swaps must each see one whole bundle, never a mix or an error.
func TestEmbeddedConcurrentEvaluateAndLoad(t *testing.T) {
	ctx := t.Context()
	e := newEngine()
	denyAll := "package caracal.authz\n\ndecision := {\"decision\": \"deny\", \"evaluation_status\": \"complete\", \"reasons\": [\"odd\"]}\n"
	if err := e.Load(ctx, "acme", bundle("acme", 0, allowAll)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 4 {
		wg.Go(func() {
			for range 200 {
				d := e.Evaluate(ctx, "acme", exchange("billing-agent", "invoices:read"))
				if !d.Allow && d.Reason != "policy denied: odd" {
					errs <- fmt.Sprintf("unexpected decision %+v", d)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for v := int64(1); v <= 40; v++ {
			src := allowAll
			if v%2 == 1 {
				src = denyAll
			}
			if err := e.Load(ctx, "acme", bundle("acme", v, src)); err != nil {
				errs <- err.Error()
				return
			}
		}
	})
	// Another zone compiling at the same time shares nothing with "acme" but OPA's
	// capability set.
	wg.Go(func() {
		for v := int64(1); v <= 10; v++ {
			if err := e.Load(ctx, "globex", defaultBundle("globex", v)); err != nil {
				errs <- err.Error()
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
}

func TestValidate(t *testing.T) {
	good := map[string]string{"authz.rego": allowAll}
	for _, tc := range []struct {
		name    string
		modules map[string]string
		data    string
		want    string // substring of the error; empty means valid
	}{
		{name: "a minimal bundle", modules: good},
		{name: "object data", modules: good, data: `{"grants": {}}`},
		{name: "blank data", modules: good, data: " \n"},
		{name: "helper modules in other packages", modules: map[string]string{
			"authz.rego": "package caracal.authz\n\nimport data.caracal.lib\n\ndecision := lib.allow\n",
			"lib.rego":   "package caracal.lib\n\nallow := {\"decision\": \"allow\", \"evaluation_status\": \"complete\"}\n",
		}},
		{name: "no modules", modules: map[string]string{}, want: "no modules"},
		{name: "an unparseable module", modules: map[string]string{"authz.rego": "package caracal.authz\n\ndecision :=\n"}, want: `parsing module "authz.rego"`},
		{name: "Rego v0 syntax", modules: map[string]string{"authz.rego": "package caracal.authz\n\ndecision = x { x := {} }\n"}, want: `parsing module "authz.rego"`},
		{name: "no decision rule", modules: map[string]string{"authz.rego": "package caracal.authz\n\nallow := true\n"}, want: "no module defines decision"},
		{name: "decision in another package", modules: map[string]string{"authz.rego": "package caracal.other\n\ndecision := {}\n"}, want: "no module defines decision"},
		{name: "a type error", modules: map[string]string{"authz.rego": "package caracal.authz\n\ndecision := {\"n\": count(1)}\n"}, want: "compiling policy bundle"},
		{name: "http.send", modules: map[string]string{"authz.rego": "package caracal.authz\n\ndecision := http.send({\"method\": \"GET\", \"url\": \"http://169.254.169.254/\"}).body\n"}, want: "http.send"},
		{name: "net.lookup_ip_addr", modules: map[string]string{"authz.rego": "package caracal.authz\n\ndecision := {\"ips\": net.lookup_ip_addr(\"example.com\")}\n"}, want: "net.lookup_ip_addr"},
		{name: "array data", modules: good, data: `[]`, want: "must be a JSON object"},
		{name: "string data", modules: good, data: `"grants"`, want: "must be a JSON object"},
		{name: "truncated data", modules: good, data: `{"grants": `, want: "parsing data document"},
		{name: "trailing data", modules: good, data: `{} {}`, want: "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := policy.Validate(t.Context(), tc.modules, json.RawMessage(tc.data))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestEmbeddedDataIsMountedAtCaracalZone(t *testing.T) {
	e := newEngine()
	b := bundle("acme", 1, `package caracal.authz

decision := {"decision": "allow", "evaluation_status": "complete"} if data.caracal.zone.allowed[input.client.id]
`)
	b.Data = json.RawMessage(`{"allowed": {"billing-agent": true}}`)
	if err := e.Load(t.Context(), "acme", b); err != nil {
		t.Fatal(err)
	}
	if d := e.Evaluate(t.Context(), "acme", exchange("billing-agent")); !d.Allow {
		t.Fatalf("decision = %+v, want allow from data", d)
	}
	if d := e.Evaluate(t.Context(), "acme", exchange("stranger")); d.Allow || d.Reason != "policy result undefined" {
		t.Fatalf("decision = %+v, want undefined", d)
	}
}

func TestEmbeddedCapsLongReasons(t *testing.T) {
	e := loaded(t, `package caracal.authz

decision := {"decision": "deny", "evaluation_status": "complete", "reasons": [concat("", [sprintf("%d", [i]) | some i in numbers.range(1, 2000)])]}
`)
	d := e.Evaluate(t.Context(), "acme", exchange("billing-agent"))
	if d.Allow || len(d.Reason) > 520 || !strings.HasSuffix(d.Reason, "...") || !strings.HasPrefix(d.Reason, "policy denied: 12345678910") {
		t.Fatalf("reason (%d bytes) = %.80q..., want it capped", len(d.Reason), d.Reason)
	}
	if len(d.Reasons) != 1 || len(d.Reasons[0]) < 2000 {
		t.Fatalf("Reasons = %d entries, want the policy's full reason kept", len(d.Reasons))
	}
}
