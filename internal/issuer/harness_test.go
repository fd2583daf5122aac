package issuer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/policies"
)

const (
	testBase     = "https://sts.test"
	apiResource  = "https://api.test/v1"
	mailResource = "https://mail.test"
)

// writeCounter wraps a real store and counts calls of every method that changes state,
// so a test can assert that a refused request wrote nothing.
type writeCounter struct {
	store.Store
	writes atomic.Int64
}

func (w *writeCounter) count() { w.writes.Add(1) }

func (w *writeCounter) CreateSession(ctx context.Context, s store.Session) error {
	w.count()
	return w.Store.CreateSession(ctx, s)
}

func (w *writeCounter) RevokeSession(ctx context.Context, zoneID, sid, reason string, now time.Time) (store.Revocation, error) {
	w.count()
	return w.Store.RevokeSession(ctx, zoneID, sid, reason, now)
}

func (w *writeCounter) PutApplication(ctx context.Context, a store.Application) error {
	w.count()
	return w.Store.PutApplication(ctx, a)
}

func (w *writeCounter) PutResource(ctx context.Context, r store.Resource) error {
	w.count()
	return w.Store.PutResource(ctx, r)
}

func (w *writeCounter) PutPolicyBundle(ctx context.Context, zoneID string, m map[string]string, d json.RawMessage, now time.Time) (store.PolicyBundle, error) {
	w.count()
	return w.Store.PutPolicyBundle(ctx, zoneID, m, d, now)
}

func (w *writeCounter) RotateSigningKey(ctx context.Context, zoneID string, next store.SigningKey, r store.KeyRotation) error {
	w.count()
	return w.Store.RotateSigningKey(ctx, zoneID, next, r)
}

func (w *writeCounter) AppendOutbox(ctx context.Context, e store.OutboxEvent) (store.OutboxEvent, error) {
	w.count()
	return w.Store.AppendOutbox(ctx, e)
}

func (w *writeCounter) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	w.count()
	return w.Store.AppendAudit(ctx, e)
}

type env struct {
	t     testing.TB
	svc   *Service
	store *writeCounter
	clock *testenv.Clock
}

type envOption func(*Options)

// newEnv builds a Service over st with two zones: "demo" (applications agent and
// reader, resources api and mail, the default policy granting agent read+write on api and
// reader read on api) and "other" (application agent with another secret, resource api).
func newEnv(t testing.TB, st store.Store, opts ...envOption) *env {
	t.Helper()
	if st == nil {
		st = memory.New()
	}
	wc := &writeCounter{Store: st}
	clk := testenv.NewClock(time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	o := Options{
		BaseURL: testBase,
		Store:   wc,
		Policy:  policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Second}),
		KEK:     kek,
		Now:     clk.Now,
	}
	for _, f := range opts {
		f(&o)
	}
	svc, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	modules, _ := policies.Default()
	for _, z := range []struct {
		id     string
		grants string
	}{
		{"demo", `{"grants":{"agent":{"` + apiResource + `":["read","write"]},"reader":{"` + apiResource + `":["read"]}}}`},
		{"other", `{"grants":{"agent":{"` + apiResource + `":["read","write"]}}}`},
	} {
		if err := svc.CreateZone(ctx, z.id, z.id); err != nil {
			t.Fatal(err)
		}
		apps := map[string]string{"agent": z.id + "-agent-secret", "reader": z.id + "-reader-secret"}
		for id, sec := range apps {
			if err := st.PutApplication(ctx, store.Application{ZoneID: z.id, ClientID: id, Name: id, SecretHash: testenv.CheapSecretHash(sec), CreatedAt: clk.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		for i, r := range []store.Resource{
			{Identifier: apiResource, Scopes: []string{"read", "write", "admin"}},
			{Identifier: mailResource, Scopes: []string{"send"}},
		} {
			r.ZoneID, r.ID, r.CreatedAt = z.id, fmt.Sprintf("r%d", i), clk.Now()
			if err := st.PutResource(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		b, err := st.PutPolicyBundle(ctx, z.id, modules, json.RawMessage(z.grants), clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		installPolicy(t, svc, b)
	}
	return &env{t: t, svc: svc, store: wc, clock: clk}
}

// installPolicy compiles a stored bundle into the engine and waits for it, as the
// Coordinator does after an upload, so that the next exchange uses it.
func installPolicy(t testing.TB, svc *Service, b store.PolicyBundle) {
	t.Helper()
	if err := svc.policy.Load(context.Background(), b.ZoneID, &b); err != nil {
		t.Fatalf("loading policy bundle of %s: %v", b.ZoneID, err)
	}
}

// waitPolicy waits (up to 10 s) until the engine has installed version for zoneID,
// compiled in the background after a refresh saw it.
func waitPolicy(t *testing.T, svc *Service, zoneID string, version int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, ok := svc.policy.Version(zoneID); ok && v == version {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy version %d of %s not installed within 10s", version, zoneID)
		}
		time.Sleep(time.Millisecond)
	}
}

type call struct {
	method      string
	path        string
	form        url.Values
	rawBody     string
	contentType string
	basic       [2]string
	header      map[string]string
}

func (e *env) do(c call) *httptest.ResponseRecorder {
	e.t.Helper()
	body := c.rawBody
	if c.form != nil {
		body = c.form.Encode()
	}
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	req := httptest.NewRequest(method, "https://sts.test"+c.path, strings.NewReader(body))
	ct := c.contentType
	if ct == "" && method == http.MethodPost {
		ct = "application/x-www-form-urlencoded"
	}
	if ct != "-" && ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.basic[0] != "" {
		req.SetBasicAuth(url.QueryEscape(c.basic[0]), url.QueryEscape(c.basic[1]))
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.svc.ServeHTTP(rec, req)
	return rec
}

// session obtains a session mandate for client in zone.
func (e *env) session(zone, client string) string {
	e.t.Helper()
	rec := e.do(call{path: "/zones/" + zone + "/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds}}, basic: [2]string{client, zone + "-" + client + "-secret"}})
	if rec.Code != http.StatusOK {
		e.t.Fatalf("client_credentials for %s/%s: %d %s", zone, client, rec.Code, rec.Body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		e.t.Fatal(err)
	}
	return tr.AccessToken
}

func exchangeForm(subject string, extra ...string) url.Values {
	v := url.Values{
		"grant_type":         {GrantTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {TokenTypeAccessToken},
		"resource":           {apiResource},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = append(v[extra[i]], extra[i+1])
	}
	return v
}

// oauthErr decodes an error body and checks the status, code and no-store header.
func oauthErr(t testing.TB, rec *httptest.ResponseRecorder, status int, code string) map[string]string {
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
	return body
}
