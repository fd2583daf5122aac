package issuer

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"testing"
)

// TestJSONAnswersEndWithANewline: every JSON answer of the STS (a token, an OAuth error,
// the metadata, the JWKS) is one JSON value followed by exactly one "\n", so answers
// printed one after another by curl each end their own line; Content-Length counts it.
func TestJSONAnswersEndWithANewline(t *testing.T) {
	e := newEnv(t, nil)
	for name, c := range map[string]call{
		"token":    {path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds}}, basic: [2]string{"agent", "demo-agent-secret"}},
		"error":    {path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds}}, basic: [2]string{"agent", "wrong"}},
		"unknown":  {path: "/zones/nowhere/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds}}},
		"metadata": {method: http.MethodGet, path: "/.well-known/oauth-authorization-server/zones/demo"},
		"jwks":     {method: http.MethodGet, path: "/zones/demo/jwks.json"},
	} {
		t.Run(name, func(t *testing.T) {
			rec := e.do(c)
			body := rec.Body.Bytes()
			if n := len(body); n < 2 || body[n-1] != '\n' || body[n-2] == '\n' {
				t.Fatalf("%d %q: want one JSON value and one trailing newline", rec.Code, body)
			}
			if !json.Valid(body) {
				t.Fatalf("not JSON: %q", body)
			}
			if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(body)) {
				t.Fatalf("Content-Length %q for %d bytes", cl, len(body))
			}
		})
	}
}
