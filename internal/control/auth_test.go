package control

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
)

func TestNewChecksOptions(t *testing.T) {
	e := newEnv(t, memory.New())
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"no store", Options{STS: e.sts}},
		{"no STS", Options{Store: e.st}},
		{"a short bootstrap token", Options{Store: e.st, STS: e.sts, BootstrapToken: "short"}},
		{"a JWT-shaped bootstrap token", Options{Store: e.st, STS: e.sts, BootstrapToken: "aaaaaaaa.bbbbbbbb.cccccccc"}},
		{"a bootstrap token with spaces", Options{Store: e.st, STS: e.sts, BootstrapToken: "a bootstrap token with spaces"}},
	} {
		if _, err := New(c.o); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	svc, err := New(Options{Store: e.st, STS: e.sts})
	if err != nil {
		t.Fatal(err)
	}
	// Without a bootstrap token, nothing is an admin until tokens are stored.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, testBase+"/v1/zones", strings.NewReader(`{"id":"x","name":"x"}`))
	req.Header.Set("Authorization", "Bearer "+bootstrapToken)
	req.Header.Set("Content-Type", "application/json")
	svc.ServeHTTP(rec, req)
	apiErr(t, rec, http.StatusUnauthorized, codeInvalidToken)
}

func TestBearerHandling(t *testing.T) {
	e := newEnv(t, memory.New())
	e.seedZone("a")
	tok, _ := e.session("a", "alice")
	send := func(header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, testBase+"/v1/zones/a/epoch", nil)
		for _, h := range header {
			req.Header.Add("Authorization", h)
		}
		rec := httptest.NewRecorder()
		e.svc.ServeHTTP(rec, req)
		return rec
	}
	rec := send()
	apiErr(t, rec, http.StatusUnauthorized, codeInvalidToken)
	if got := rec.Header().Get("WWW-Authenticate"); got != `Bearer realm="caracal-coordinator"` {
		t.Fatalf("challenge without a token = %q", got)
	}
	apiErr(t, send("Basic YWxpY2U6c2VjcmV0"), http.StatusUnauthorized, codeInvalidToken)
	apiErr(t, send("Bearer "+bootstrapToken, "Bearer "+bootstrapToken), http.StatusBadRequest, codeInvalidRequest)
	apiErr(t, send("Bearer a b"), http.StatusBadRequest, codeInvalidRequest)
	rec = send("Bearer " + tok[:len(tok)-4] + "AAAA")
	apiErr(t, rec, http.StatusUnauthorized, codeInvalidToken)
	if !strings.Contains(rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("challenge = %q", rec.Header().Get("WWW-Authenticate"))
	}
	if rec := send("bearer " + tok); rec.Code != http.StatusOK {
		t.Fatalf("a lower-case scheme: %d %s", rec.Code, rec.Body)
	}
}

func TestRouting(t *testing.T) {
	e := newEnv(t, memory.New())
	e.seedZone("a")
	for path, want := range map[string]bool{
		"/v1/zones":                        true,
		"/v1/admin-tokens/adm_x/revoke":    true,
		"/v1/zones/a/epoch":                true,
		"/v1/zones/a/sessions/s1":          true,
		"/v1/zones/a/delegations/e/revoke": true,
		"/v1/zones/a/unknown":              true,
		"/v1/zones/a/applications/":        true,
		"/v1":                              true,
		"/v1x":                             false,
		"/v2/zones":                        false,
		"/zones/a/oauth2/token":            false,
		"/":                                false,
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			if got := e.svc.Handles(httptest.NewRequest(method, testBase+path, nil)); got != want {
				t.Errorf("Handles(%s %s) = %v, want %v", method, path, got, want)
			}
		}
	}
	rec := e.do(http.MethodDelete, "/v1/zones/a/epoch", bootstrapToken, "")
	apiErr(t, rec, http.StatusMethodNotAllowed, codeInvalidRequest)
	if rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow = %q", rec.Header().Get("Allow"))
	}
	apiErr(t, e.do(http.MethodGet, "/v1/zones/a/unknown", bootstrapToken, ""), http.StatusNotFound, codeNotFound)
	// A malformed zone id is simply an unknown zone for a global admin.
	apiErr(t, e.do(http.MethodGet, "/v1/zones/NOT_A_ZONE/epoch", bootstrapToken, ""), http.StatusNotFound, codeNotFound)
}

func TestStorageUnavailable(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedZone("a")
		tok, _ := e.session("a", "alice")
		writeToken, _ := e.mint("a", "write")
		_ = st.Close()
		for _, c := range []struct{ method, path, token, body string }{
			{http.MethodGet, "/v1/zones/a/epoch", bootstrapToken, ""},
			{http.MethodGet, "/v1/zones/a/epoch", writeToken, ""},
			{http.MethodGet, "/v1/zones/a/epoch", tok, ""},
			{http.MethodPost, "/v1/zones", bootstrapToken, `{"id":"z","name":"z"}`},
		} {
			rec := e.do(c.method, c.path, c.token, c.body)
			desc := apiErr(t, rec, http.StatusServiceUnavailable, codeUnavailable)
			if rec.Header().Get("Retry-After") == "" || strings.Contains(desc, "sql") || strings.Contains(desc, "closed") {
				t.Fatalf("%s %s: Retry-After %q, description %q", c.method, c.path, rec.Header().Get("Retry-After"), desc)
			}
		}
	})
}
