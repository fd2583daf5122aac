package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

// stsCaddyfile is the demo configuration on test ports, with the given storage lines.
func stsCaddyfile(storage string) func(port, admin int) string {
	return func(port, admin int) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%[2]d
	default_bind 127.0.0.1
	skip_install_trust
	auto_https disable_redirects
	caracal_sts {
		base_url https://localhost:%[1]d
		%[3]s
		zone demo {
			application demo-agent demo-secret
			application other-agent other-secret
			resource https://localhost:%[1]d/api read write
			policy default
			grant demo-agent https://localhost:%[1]d/api read write
		}
	}
	caracal_coordinator
}

https://localhost:%[1]d {
	tls internal
	caracal_sts
	respond "not an STS path" 404
}
`, port, admin, storage)
	}
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	Scope       string `json:"scope"`
	ExpiresIn   int    `json:"expires_in"`
	Error       string `json:"error"`
}

func decode(t *testing.T, body []byte) tokenResponse {
	t.Helper()
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatalf("not JSON: %q", body)
	}
	return tr
}

// TestQuickstartThroughCaddy runs the README quickstart against a real caracal process,
// on the memory store and on PostgreSQL.
func TestQuickstartThroughCaddy(t *testing.T) {
	for name, storage := range map[string]string{
		"memory":   "storage memory",
		"postgres": "storage postgres " + databaseURL + "\n\t\tkey_encryption_key 0000000000000000000000000000000000000000000000000000000000000001",
	} {
		t.Run(name, func(t *testing.T) {
			in := start(t, stsCaddyfile(storage))
			resource := in.url("/api")
			resp, body := in.postForm(t, "/zones/demo/oauth2/token", "grant_type=client_credentials", "demo-agent", "demo-secret")
			if resp.StatusCode != 200 {
				t.Fatalf("client_credentials: %d %s", resp.StatusCode, body)
			}
			session := decode(t, body).AccessToken

			exchange := url.Values{
				"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":      {session},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"resource":           {resource},
				"scope":              {"read"},
			}.Encode()
			resp, body = in.postForm(t, "/zones/demo/oauth2/token", exchange)
			if tr := decode(t, body); resp.StatusCode != 200 || tr.Scope != "read" || tr.ExpiresIn != 300 {
				t.Fatalf("exchange: %d %s", resp.StatusCode, body)
			}

			// An application without a grant is refused by the default policy.
			resp, body = in.postForm(t, "/zones/demo/oauth2/token", "grant_type=client_credentials", "other-agent", "other-secret")
			if resp.StatusCode != 200 {
				t.Fatalf("client_credentials for other-agent: %d %s", resp.StatusCode, body)
			}
			other := decode(t, body).AccessToken
			resp, body = in.postForm(t, "/zones/demo/oauth2/token", url.Values{
				"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {other},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "resource": {resource},
			}.Encode())
			if tr := decode(t, body); resp.StatusCode != 403 || tr.Error != "access_denied" {
				t.Fatalf("ungranted exchange: %d %s", resp.StatusCode, body)
			}

			for _, path := range []string{"/zones/demo/jwks.json", "/.well-known/oauth-authorization-server/zones/demo"} {
				req, _ := http.NewRequest(http.MethodGet, in.url(path), nil)
				resp, body := in.do(t, req)
				if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") == "" {
					t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
				}
			}
			// Requests outside the STS paths fall through to the next handler.
			req, _ := http.NewRequest(http.MethodGet, in.url("/elsewhere"), nil)
			if resp, _ := in.do(t, req); resp.StatusCode != 404 {
				t.Fatalf("fallthrough: %d", resp.StatusCode)
			}

			resp, body = in.postForm(t, "/zones/demo/oauth2/revoke", url.Values{"token": {session}}.Encode())
			if resp.StatusCode != 200 {
				t.Fatalf("revoke: %d %s", resp.StatusCode, body)
			}
			resp, body = in.postForm(t, "/zones/demo/oauth2/token", exchange)
			if tr := decode(t, body); resp.StatusCode != 400 || tr.Error != "invalid_grant" {
				t.Fatalf("exchange after revoke: %d %s", resp.StatusCode, body)
			}
		})
	}
}
