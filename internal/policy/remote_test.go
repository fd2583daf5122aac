package policy_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/policies"
)

// opaServer is a real OPA server, built from OPA's own packages at the module's
// pinned version, listening on a random loopback port.
type opaServer struct {
	URL     string
	server  *server.Server
	served  chan error
	stopped sync.Once
}

// startOPA starts an OPA server and installs modules and data (mounted at
// data.caracal.zone) through its REST API, the way an operator would.
func startOPA(t *testing.T, modules map[string]string, data json.RawMessage) *opaServer {
	t.Helper()
	ctx := context.Background()
	store := inmem.New()
	mgr, err := plugins.New(nil, "caracal-test", store,
		plugins.Logger(logging.NewNoOpLogger()), plugins.ConsoleLogger(logging.NewNoOpLogger()))
	if err != nil {
		t.Fatalf("creating OPA plugin manager: %v", err)
	}
	if err := mgr.Start(ctx); err != nil {
		t.Fatalf("starting OPA plugin manager: %v", err)
	}
	srv, err := server.New().
		WithAddresses([]string{"127.0.0.1:0"}).
		WithStore(store).
		WithManager(mgr).
		Init(ctx)
	if err != nil {
		t.Fatalf("initialising OPA server: %v", err)
	}
	loops, err := srv.Listeners()
	if err != nil || len(loops) != 1 {
		t.Fatalf("OPA listeners: %d, %v", len(loops), err)
	}
	o := &opaServer{server: srv, served: make(chan error, 1)}
	go func() { o.served <- loops[0]() }()
	for o.URL == "" {
		select {
		case err := <-o.served:
			t.Fatalf("OPA server stopped before listening: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if addrs := srv.Addrs(); len(addrs) > 0 {
			o.URL = "http://" + addrs[0]
		}
	}
	t.Cleanup(func() {
		o.stop(t)
		mgr.Stop(ctx)
	})

	for name, src := range modules {
		o.put(t, "/v1/policies/"+name, "text/plain", []byte(src))
	}
	if len(data) > 0 {
		o.put(t, "/v1/data/caracal/zone", "application/json", data)
	}
	return o
}

func (o *opaServer) put(t *testing.T, path, contentType string, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, o.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT %s: HTTP %d: %s", path, resp.StatusCode, msg)
	}
}

// stop shuts the server down; calling it twice is harmless.
func (o *opaServer) stop(t *testing.T) {
	t.Helper()
	o.stopped.Do(func() { o.shutdown(t) })
}

func (o *opaServer) shutdown(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.server.Shutdown(ctx); err != nil {
		t.Errorf("stopping OPA server: %v", err)
	}
	select {
	case err := <-o.served:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("OPA server loop: %v", err)
		}
	case <-ctx.Done():
	}
}

func remote(t *testing.T, url string, timeout time.Duration) *policy.Remote {
	t.Helper()
	r, err := policy.NewRemote(policy.RemoteOptions{URL: url, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRemoteAgainstARealOPAServer(t *testing.T) {
	modules, data := policies.Default()
	opa := startOPA(t, modules, data)
	r := remote(t, opa.URL, roomy)
	ctx := t.Context()

	t.Run("it allows and narrows like the embedded engine", func(t *testing.T) {
		d := r.Evaluate(ctx, "acme", exchange("support-agent", "invoices:read", "invoices:write"))
		if !d.Allow || !d.HasScopes || strings.Join(d.Scopes, " ") != "invoices:read" {
			t.Fatalf("decision = %+v, want allow narrowed to invoices:read", d)
		}
	})
	t.Run("it carries the policy's deny reason", func(t *testing.T) {
		d := r.Evaluate(ctx, "acme", exchange("stranger", "invoices:read"))
		want := `policy denied: client "stranger" has no grant on "https://api.example.com/invoices"`
		if d.Allow || d.Reason != want {
			t.Fatalf("decision = %+v, want %q", d, want)
		}
	})
	t.Run("a stopped server denies every later evaluation", func(t *testing.T) {
		opa.stop(t)
		// The default timeout here: a refused connection must deny at once, as
		// unreachable, not by running into the deadline.
		r := remote(t, opa.URL, 0)
		for range 3 {
			d := r.Evaluate(ctx, "acme", exchange("support-agent", "invoices:read"))
			if d.Allow || d.Reason != "policy server unreachable" {
				t.Fatalf("decision = %+v, want an unreachable deny", d)
			}
		}
	})
}

func TestRemoteDenyModesAgainstARealOPAServer(t *testing.T) {
	for _, tc := range []struct {
		name, policy, reason string
		timeout              time.Duration
	}{
		{
			name:   "an undefined decision",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\"} if input.client.id == \"root\"\n",
			reason: "policy result undefined",
		},
		{
			name:   "an allow whose evaluation is partial",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"partial\"}\n",
			reason: `policy evaluation incomplete (evaluation_status "partial")`,
		},
		{
			name:   "an allow whose scopes is a string",
			policy: "package caracal.authz\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"scopes\": \"x\"}\n",
			reason: `policy result malformed: "scopes" must be an array of strings`,
		},
		{
			// The request asks for strict built-in errors, so the server fails the
			// query instead of letting the negation allow.
			name: "a built-in error under a negation",
			policy: `package caracal.authz

over_limit if to_number(input.client.id) > 10

decision := {"decision": "allow", "evaluation_status": "complete"} if not over_limit
`,
			reason: "policy server returned HTTP 500",
		},
		{
			name: "a policy slower than the timeout",
			policy: `package caracal.authz

decision := {"decision": "allow", "evaluation_status": "complete"} if {
	count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j; x < 0]) == 0
}
`,
			reason:  "policy server timed out",
			timeout: policy.DefaultTimeout,
		},
	} {
		t.Run("it denies "+tc.name, func(t *testing.T) {
			opa := startOPA(t, map[string]string{"authz.rego": tc.policy}, nil)
			d := remote(t, opa.URL, cmp.Or(tc.timeout, roomy)).Evaluate(t.Context(), "acme", exchange("billing-agent", "invoices:read"))
			if d.Allow || d.Reason != tc.reason {
				t.Fatalf("decision = %+v, want deny %q", d, tc.reason)
			}
		})
	}
}

func TestRemoteSendsTheSameInputDocument(t *testing.T) {
	opa := startOPA(t, map[string]string{"authz.rego": echoInput}, nil)
	d := remote(t, opa.URL, roomy).Evaluate(t.Context(), "acme", echoedInput())
	if len(d.Reasons) != 1 || d.Reasons[0] != wantInputJSON {
		t.Fatalf("OPA saw input\n%v\nwant\n%s", d.Reasons, wantInputJSON)
	}
}

// TestRemoteRejectsBrokenServers covers answers a real OPA server does not give but a
// misconfigured URL, a proxy or a compromised host could.
func TestRemoteRejectsBrokenServers(t *testing.T) {
	allow := `{"result": {"decision": "allow", "evaluation_status": "complete"}}`
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		reason  string
		timeout time.Duration
	}{
		{
			name:    "a well-formed allow (the control case)",
			handler: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, allow) },
		},
		{
			name: "a redirect, without following it",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					io.WriteString(w, allow)
					return
				}
				http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
			},
			reason: "policy server returned HTTP 307",
		},
		{
			name: "a body over 1 MiB",
			handler: func(w http.ResponseWriter, _ *http.Request) {
				io.WriteString(w, `{"result": {"decision": "allow", "evaluation_status": "complete", "reasons": ["`)
				io.WriteString(w, strings.Repeat("x", 1<<20))
				io.WriteString(w, `"]}}`)
			},
			reason: "policy server response too large",
		},
		{
			name:    "a body that is not JSON",
			handler: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "<html>ok</html>") },
			reason:  "policy result malformed: policy server answer is not a JSON object",
		},
		{
			name:    "two JSON documents",
			handler: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, allow+allow) },
			reason:  "policy result malformed: trailing data after the policy server answer",
		},
		{
			name:    "a null answer",
			handler: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "null") },
			reason:  "policy result malformed: policy server answer is not a JSON object",
		},
		{
			name:    "a null result",
			handler: func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"result": null}`) },
			reason:  "policy result malformed: not an object",
		},
		{
			name: "a server that never answers",
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			reason:  "policy server timed out",
			timeout: policy.DefaultTimeout,
		},
		{
			name: "a server that stalls mid-body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, `{"result": {"decision": "al`)
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
			reason:  "policy server timed out",
			timeout: policy.DefaultTimeout,
		},
	} {
		t.Run("it handles "+tc.name, func(t *testing.T) {
			type seen struct {
				path, query, contentType string
				body                     map[string]json.RawMessage
			}
			requests := make(chan seen, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v1/data/caracal/authz/decision" {
					s := seen{path: r.URL.Path, query: r.URL.RawQuery, contentType: r.Header.Get("Content-Type")}
					json.NewDecoder(r.Body).Decode(&s.body)
					requests <- s
				}
				tc.handler(w, r)
			}))
			defer srv.Close()
			d := remote(t, srv.URL+"/", cmp.Or(tc.timeout, roomy)).Evaluate(t.Context(), "acme", exchange("billing-agent", "invoices:read"))
			if tc.reason == "" {
				if !d.Allow {
					t.Fatalf("decision = %+v, want allow", d)
				}
			} else if d.Allow || d.Reason != tc.reason {
				t.Fatalf("decision = %+v, want deny %q", d, tc.reason)
			}
			got := <-requests
			if got.query != "strict-builtin-errors=true" || got.contentType != "application/json" || got.body["input"] == nil {
				t.Fatalf("request: %+v", got)
			}
		})
	}
}

func TestRemoteBaseURLPath(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Path
		io.WriteString(w, `{"result": {"decision": "allow", "evaluation_status": "complete"}}`)
	}))
	defer srv.Close()
	d := remote(t, srv.URL+"/opa/", roomy).Evaluate(t.Context(), "acme", exchange("billing-agent"))
	if !d.Allow || got != "/opa/v1/data/caracal/authz/decision" {
		t.Fatalf("decision %+v, path %q", d, got)
	}
}

func TestRemoteUnreachableAndCancelled(t *testing.T) {
	// A listener that was closed: connections are refused at once.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if d := remote(t, url, 0).Evaluate(t.Context(), "acme", exchange("billing-agent")); d.Allow || d.Reason != "policy server unreachable" {
		t.Fatalf("decision = %+v", d)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if d := remote(t, url, 0).Evaluate(ctx, "acme", exchange("billing-agent")); d.Allow || d.Reason != "policy evaluation cancelled" {
		t.Fatalf("decision = %+v", d)
	}
	if d := remote(t, url, 0).Evaluate(t.Context(), "acme", nil); d.Allow || d.Reason != "policy input missing" {
		t.Fatalf("decision = %+v", d)
	}
	if d := remote(t, url, 0).Evaluate(t.Context(), "globex", exchange("billing-agent")); d.Allow || d.Reason != "policy input is for another zone" {
		t.Fatalf("decision = %+v", d)
	}
}

func TestNewRemoteChecksTheURL(t *testing.T) {
	for _, url := range []string{"", "opa:8181", "ftp://opa:8181", "http://", "http://opa:8181/?x=1", "http://opa:8181/#frag", "http://[::1"} {
		if _, err := policy.NewRemote(policy.RemoteOptions{URL: url}); err == nil {
			t.Errorf("NewRemote(%q) = nil error", url)
		}
	}
	r, err := policy.NewRemote(policy.RemoteOptions{URL: "https://opa.internal:8181"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Load(t.Context(), "acme", defaultBundle("acme", 1)); err != nil {
		t.Fatalf("Remote.Load = %v, want nil", err)
	}
	if v, ok := r.Version("acme"); ok || v != 0 {
		t.Fatalf("Remote.Version = %d, %v", v, ok)
	}
}
