package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestSTSOAuthEdgesThroughCaddy drives the OAuth edges a client library notices through
// the real binary: the metadata a discovery client reads, the authorization endpoint it
// requires, a one-step client_credentials grant for a resource that the gateway accepts,
// "none" identification, and a charset in another case.
func TestSTSOAuthEdgesThroughCaddy(t *testing.T) {
	in := startGateway(t, gatewayConfig{serveSTS: true})
	base := in.url("")
	iss := base + "/zones/alpha"
	client := in.newClient(t, false, 2)

	t.Run("metadata", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, in.url("/.well-known/oauth-authorization-server/zones/alpha"), nil)
		resp, body := in.do(t, req)
		var md struct {
			AuthorizationEndpoint string   `json:"authorization_endpoint"`
			ResponseTypes         []string `json:"response_types_supported"`
			Scopes                []string `json:"scopes_supported"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &md) != nil {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if md.AuthorizationEndpoint != iss+"/oauth2/authorize" || md.ResponseTypes == nil || len(md.ResponseTypes) != 0 || !slices.Equal(md.Scopes, []string{"read", "write"}) {
			t.Fatalf("metadata %s", body)
		}
		req, _ = http.NewRequest(http.MethodGet, iss+"/oauth2/authorize?response_type=code&client_id=agent", nil)
		resp, body = in.do(t, req)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"unsupported_response_type"`) {
			t.Fatalf("authorize: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("client_credentials with resource gives a mandate the gateway accepts", func(t *testing.T) {
		form := url.Values{"grant_type": {"client_credentials"}, "resource": {base + "/api"}, "scope": {"read"}}
		resp, body := in.postForm(t, "/zones/alpha/oauth2/token", form.Encode(), "agent", agentSecret)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		tok := accessToken(t, body)
		c := claimsOf(t, tok)
		if c.Use != "resource" || c.Audience != base+"/api" || c.Scope != "read" {
			t.Fatalf("claims %+v", c)
		}
		resp, body = in.call(t, client, "/whoami", tok)
		if resp.StatusCode != http.StatusOK || string(body) != "agent|agent|alpha|read|"+c.SID {
			t.Fatalf("whoami: %d %q", resp.StatusCode, body)
		}
		form.Set("scope", "write")
		resp, body = in.postForm(t, "/zones/alpha/oauth2/token", form.Encode(), "reader", readerSecret)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"access_denied"`) {
			t.Fatalf("reader asking for write: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("none identification and charset", func(t *testing.T) {
		session := in.session(t, "alpha", "agent", agentSecret)
		form := url.Values{
			"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":      {session},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
			"resource":           {base + "/api"},
			"client_id":          {"reader"},
		}
		resp, body := in.postForm(t, "/zones/alpha/oauth2/token", form.Encode())
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"invalid_client"`) {
			t.Fatalf("another client_id: %d %s", resp.StatusCode, body)
		}
		form.Set("client_id", "agent")
		req, _ := http.NewRequest(http.MethodPost, in.url("/zones/alpha/oauth2/token"), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=Utf-8")
		resp, body = in.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the token's client_id with charset=Utf-8: %d %s", resp.StatusCode, body)
		}
	})
}
