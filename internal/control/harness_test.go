package control

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/policies"
)

const (
	testBase       = "https://sts.test"
	bootstrapToken = "bootstrap-admin-token-for-tests"
	apiResource    = "https://api.test/v1"
	mailResource   = "https://mail.test"
	oldResource    = "https://old.test"
)

// clients registered in every seeded zone; each one's secret is "{zone}-{client}-secret".
var clients = []string{"alice", "bob", "carol", "dave", "erin"}

type env struct {
	t        testing.TB
	st       store.Store
	sts      *issuer.Service
	svc      *Service
	clock    *testenv.Clock
	notified atomic.Int64
}

// newEnv builds an STS and a Coordinator over st, sharing one clock; opts adjust the
// STS's options.
func newEnv(t testing.TB, st store.Store, opts ...func(*issuer.Options)) *env {
	t.Helper()
	clk := testenv.NewClock(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	o := issuer.Options{
		BaseURL: testBase,
		Store:   st,
		Policy:  policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Second}),
		KEK:     kek,
		Now:     clk.Now,
	}
	for _, f := range opts {
		f(&o)
	}
	sts, err := issuer.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, sts: sts, clock: clk}
	e.svc, err = New(Options{Store: st, STS: sts, BootstrapToken: bootstrapToken, Notify: func() { e.notified.Add(1) }, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// seedZone creates a zone through the API, then registers the test clients (cheap
// hashes, straight into storage), the api, mail and (archived) old resources, and the
// default policy granting alice read on the api resource.
func (e *env) seedZone(zoneID string) {
	e.t.Helper()
	rec := e.do(http.MethodPost, "/v1/zones", bootstrapToken, `{"id":"`+zoneID+`","name":"zone `+zoneID+`"}`)
	if rec.Code != http.StatusCreated {
		e.t.Fatalf("creating zone %s: %d %s", zoneID, rec.Code, rec.Body)
	}
	ctx := context.Background()
	for _, c := range clients {
		if err := e.st.PutApplication(ctx, store.Application{ZoneID: zoneID, ClientID: c, Name: c, SecretHash: testenv.CheapSecretHash(zoneID + "-" + c + "-secret")}); err != nil {
			e.t.Fatal(err)
		}
	}
	for i, r := range []store.Resource{
		{Identifier: apiResource, Scopes: []string{"read", "write", "admin"}},
		{Identifier: mailResource, Scopes: []string{"send"}},
		{Identifier: oldResource, Scopes: []string{"read"}, Archived: true},
	} {
		r.ZoneID, r.ID = zoneID, fmt.Sprintf("r%d", i)
		if err := e.st.PutResource(ctx, r); err != nil {
			e.t.Fatal(err)
		}
	}
	data := grants(`"alice":{"` + apiResource + `":["read"]}`)
	compiled, err := e.sts.CompilePolicy(ctx, zoneID, defaultModules(), data)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := e.st.PutPolicyBundle(ctx, zoneID, defaultModules(), data, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	e.sts.InstallPolicy(zoneID, b.Version, compiled)
}

func defaultModules() map[string]string {
	modules, _ := policies.Default()
	return modules
}

// grants is a default-policy data document with the given grants members.
func grants(members string) json.RawMessage {
	return json.RawMessage(`{"grants":{` + members + `}}`)
}

// do sends a request to the Coordinator. A non-empty body is sent as application/json.
func (e *env) do(method, path, token, body string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, testBase+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	e.svc.ServeHTTP(rec, req)
	return rec
}

// session obtains a session mandate for client in zone through the STS token endpoint
// and returns it with its sid.
func (e *env) session(zoneID, client string) (token, sid string) {
	e.t.Helper()
	form := url.Values{"grant_type": {issuer.GrantClientCreds}}
	req := httptest.NewRequest(http.MethodPost, testBase+"/zones/"+zoneID+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, zoneID+"-"+client+"-secret")
	rec := httptest.NewRecorder()
	e.sts.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		e.t.Fatalf("client_credentials for %s/%s: %d %s", zoneID, client, rec.Code, rec.Body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		e.t.Fatal(err)
	}
	return tr.AccessToken, claimOf(e.t, tr.AccessToken, "sid")
}

// claimOf reads a string claim of a JWT without verifying it (the test got the token
// from the STS itself).
func claimOf(t testing.TB, token, name string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	v, _ := claims[name].(string)
	return v
}

// exchange performs a token exchange through the STS's HTTP endpoint.
func (e *env) exchange(zoneID, subject, resource, scope string) *httptest.ResponseRecorder {
	e.t.Helper()
	form := url.Values{
		"grant_type":         {issuer.GrantTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {issuer.TokenTypeAccessToken},
		"resource":           {resource},
	}
	if scope != "" {
		form.Set("scope", scope)
	}
	req := httptest.NewRequest(http.MethodPost, testBase+"/zones/"+zoneID+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	e.sts.ServeHTTP(rec, req)
	return rec
}

// mint creates an admin token through the API with the bootstrap token.
func (e *env) mint(zoneID, capability string) (token, id string) {
	e.t.Helper()
	body := `{"capability":"` + capability + `"}`
	if zoneID != "" {
		body = `{"zone_id":"` + zoneID + `","capability":"` + capability + `"}`
	}
	var resp adminTokenResponse
	decodeOK(e.t, e.do(http.MethodPost, "/v1/admin-tokens", bootstrapToken, body), http.StatusCreated, &resp)
	return resp.Token, resp.ID
}

// delegate asks the Coordinator to create an edge with the source's session mandate.
func (e *env) delegate(zoneID, sourceToken string, body map[string]any) *httptest.ResponseRecorder {
	e.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.do(http.MethodPost, "/v1/zones/"+zoneID+"/delegations", sourceToken, string(b))
}

// mustDelegate creates an edge and returns it.
func (e *env) mustDelegate(zoneID, sourceToken string, body map[string]any) edgeView {
	e.t.Helper()
	var v edgeView
	decodeOK(e.t, e.delegate(zoneID, sourceToken, body), http.StatusCreated, &v)
	return v
}

// decodeOK checks the status and the no-store header and decodes the JSON body.
func decodeOK(t testing.TB, rec *httptest.ResponseRecorder, status int, v any) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", got)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("response is not the expected JSON: %v; body %s", err, rec.Body)
	}
}

// apiErr checks an error answer: status, code, a description, no-store, and the
// Bearer challenge on 401. It returns the description.
func apiErr(t testing.TB, rec *httptest.ResponseRecorder, status int, code string) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body is not JSON: %q", rec.Body)
	}
	if body["error"] != code {
		t.Fatalf("error = %q, want %q (%s)", body["error"], code, body["error_description"])
	}
	if body["error_description"] == "" {
		t.Fatalf("error %s has no error_description", code)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Fatalf("Cache-Control = %q, want no-store", got)
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer ") {
		t.Fatalf("401 without a Bearer challenge: %q", rec.Header().Get("WWW-Authenticate"))
	}
	return body["error_description"]
}

// wantRule checks a 400 invalid_request whose description mentions the rule.
func wantRule(t testing.TB, rec *httptest.ResponseRecorder, rule string) {
	t.Helper()
	if desc := apiErr(t, rec, http.StatusBadRequest, codeInvalidRequest); !strings.Contains(desc, rule) {
		t.Fatalf("description %q does not name the rule %q", desc, rule)
	}
}

// pending returns the unpublished outbox rows.
func (e *env) pending() []store.OutboxEvent {
	e.t.Helper()
	rows, err := e.st.PendingOutbox(context.Background(), 10_000)
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}

func (e *env) epoch(zoneID string) int64 {
	e.t.Helper()
	n, err := e.st.Epoch(context.Background(), zoneID)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) edge(zoneID, id string) store.Edge {
	e.t.Helper()
	edge, err := e.st.GetEdge(context.Background(), zoneID, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return edge
}

func (e *env) audit(zoneID string) []store.AuditEvent {
	e.t.Helper()
	events, err := e.st.ListAudit(context.Background(), zoneID, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return events
}
