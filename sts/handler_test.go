package sts

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store/memory"
)

// The handler answers every path under its prefixes itself (404, 405 as JSON) and passes
// only the others down the chain.
func TestHandlerNeverPassesOnItsOwnPaths(t *testing.T) {
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	svc, err := issuer.New(issuer.Options{
		BaseURL: "https://sts.test",
		Store:   memory.New(),
		Policy:  policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Second}),
		KEK:     kek,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{service: svc}
	for _, c := range []struct {
		method, path string
		status       int // 0: passed on
	}{
		{http.MethodGet, "/zones/demo/oauth2/token", http.StatusMethodNotAllowed},
		{http.MethodPost, "/zones/demo/jwks.json", http.StatusMethodNotAllowed},
		{http.MethodOptions, "/zones/demo/oauth2/revoke", http.StatusMethodNotAllowed},
		{http.MethodPost, "/zones/demo/oauth2/token/", http.StatusNotFound},
		{http.MethodGet, "/zones/demo/anything", http.StatusNotFound},
		{http.MethodGet, "/.well-known/oauth-authorization-server/zones/demo/x", http.StatusNotFound},
		{http.MethodGet, "/zones/demo/jwks.json", http.StatusNotFound}, // no such zone
		{http.MethodGet, "/api/hello", 0},
		{http.MethodGet, "/zonesx", 0},
		{http.MethodGet, "/.well-known/oauth-protected-resource/api", 0},
	} {
		passed := false
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
			passed = true
			w.WriteHeader(http.StatusTeapot)
			return nil
		})
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, httptest.NewRequest(c.method, "https://sts.test"+c.path, nil), next); err != nil {
			t.Fatal(err)
		}
		if c.status == 0 {
			if !passed {
				t.Errorf("%s %s was not passed on: %d", c.method, c.path, rec.Code)
			}
			continue
		}
		if passed || rec.Code != c.status || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: passed on %v, status %d, Content-Type %q; want %d JSON", c.method, c.path, passed, rec.Code, rec.Header().Get("Content-Type"), c.status)
		}
		if c.status == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", c.method, c.path)
		}
	}
}
