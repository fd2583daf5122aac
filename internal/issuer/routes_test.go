package issuer

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestHandlesEverythingUnderTheSTSPrefixes(t *testing.T) {
	e := newEnv(t, nil)
	for path, want := range map[string]bool{
		"/zones/demo/oauth2/token":  true,
		"/zones/demo/oauth2/token/": true,
		"/zones/demo/unknown":       true,
		"/zones/":                   true,
		"/zones":                    true,
		"/.well-known/oauth-authorization-server/zones/x/y": true,
		"/.well-known/oauth-authorization-server/zones":     true,
		"/zonesx": false,
		"/.well-known/oauth-authorization-server":   false,
		"/.well-known/oauth-protected-resource/api": false,
		"/v1/zones": false,
		"/":         false,
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodOptions} {
			if got := e.svc.Handles(httptest.NewRequest(method, "https://sts.test"+path, nil)); got != want {
				t.Errorf("Handles(%s %s) = %v, want %v", method, path, got, want)
			}
		}
	}
}

func TestWrongMethodsOnSTSEndpointsAre405WithAllow(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/zones/demo/oauth2/token", "POST"},
		{http.MethodPut, "/zones/demo/oauth2/token", "POST"},
		{http.MethodOptions, "/zones/demo/oauth2/token", "POST"},
		{http.MethodGet, "/zones/demo/oauth2/revoke", "POST"},
		{http.MethodPost, "/zones/demo/jwks.json", "GET, HEAD"},
		{http.MethodDelete, "/zones/demo/jwks.json", "GET, HEAD"},
		{http.MethodPost, "/zones/demo/.well-known/oauth-authorization-server", "GET, HEAD"},
		{http.MethodOptions, "/.well-known/oauth-authorization-server/zones/demo", "GET, HEAD"},
		// An unknown zone on a known path: the method is wrong whatever the zone.
		{http.MethodGet, "/zones/nowhere/oauth2/token", "POST"},
	} {
		rec := e.do(call{method: c.method, path: c.path})
		oauthErr(t, rec, http.StatusMethodNotAllowed, CodeInvalidRequest)
		if got := rec.Header().Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	// HEAD on the GET endpoints is served like the GET.
	for _, path := range []string{"/zones/demo/jwks.json", "/zones/demo/.well-known/oauth-authorization-server"} {
		if rec := e.do(call{method: http.MethodHead, path: path}); rec.Code != http.StatusOK {
			t.Fatalf("HEAD %s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

func TestUnknownPathsUnderTheSTSPrefixesAre404(t *testing.T) {
	e := newEnv(t, nil)
	cc := url.Values{"grant_type": {GrantClientCreds}}
	basic := [2]string{"agent", "demo-agent-secret"}
	for _, path := range []string{
		"/zones/demo/oauth2/token/", "/zones/demo/oauth2/token/x", "/zones/demo/oauth2", "/zones/demo",
		"/zones/", "/zones", "/zones/demo/jwks.json/", "/.well-known/oauth-authorization-server/zones/demo/x",
		"/.well-known/oauth-authorization-server/zones",
	} {
		// A valid client_credentials request on a near-miss path issues nothing.
		oauthErr(t, e.do(call{path: path, form: cc, basic: basic}), http.StatusNotFound, CodeNotFound)
		oauthErr(t, e.do(call{method: http.MethodGet, path: path}), http.StatusNotFound, CodeNotFound)
	}
}
