package caddymodules

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/caracalgw/caracal/internal/mcprules"
	"github.com/caracalgw/caracal/mandate"
)

const testMetadataURL = "https://api.caddymodules.test/.well-known/oauth-protected-resource/v1"

func TestRFC9728Section3_1MetadataURLInsertsTheWellKnownSuffix(t *testing.T) {
	for resource, want := range map[string]string{
		"https://localhost:8443/mcp":      "https://localhost:8443/.well-known/oauth-protected-resource/mcp",
		"https://api.example/v1/":         "https://api.example/.well-known/oauth-protected-resource/v1",
		"https://api.example":             "https://api.example/.well-known/oauth-protected-resource",
		"https://api.example/":            "https://api.example/.well-known/oauth-protected-resource",
		"http://127.0.0.1:8080/a/b":       "http://127.0.0.1:8080/.well-known/oauth-protected-resource/a/b",
		"urn:caracal:api":                 "",
		"https://api.example/v1?tenant=a": "",
		"https://api.example/v1#top":      "",
		"/relative":                       "",
	} {
		if got := metadataURL(resource); got != want {
			t.Errorf("metadataURL(%q) = %q, want %q", resource, got, want)
		}
	}
}

func TestRFC9728Section3_2MetadataResponse(t *testing.T) {
	f := newFixture(t)
	h := f.newHandler(t, &Handler{Scopes: []string{"read"}, MCP: &MCPConfig{Spec: mcprules.Spec{
		Tools:   []mcprules.Rule{{Match: "search", Scopes: []string{"tool:search"}}, {Match: "delete", Scopes: []string{"deny"}}},
		Methods: []mcprules.Rule{{Match: "tools/list", Scopes: []string{"allow"}}},
	}}})
	srv, client := serve(t, h, hello, false)
	// No Authorization: the document is public, served before any verification.
	resp, body := get(t, client, srv.URL+"/.well-known/oauth-protected-resource/v1", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q, body %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"resource":                 testResource,
		"authorization_servers":    []any{f.issuer},
		"scopes_supported":         []any{"read", "tool:search"},
		"bearer_methods_supported": []any{"header"},
	}
	if len(doc) != len(want) {
		t.Fatalf("document %s, want the members %v", body, want)
	}
	for k, v := range want {
		if got, _ := json.Marshal(doc[k]); string(got) != string(must(json.Marshal(v))) {
			t.Errorf("%s = %s, want %v", k, got, v)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/.well-known/oauth-protected-resource/v1", nil)
	pr, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pr.Body.Close()
	if pr.StatusCode != http.StatusMethodNotAllowed || pr.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: status %d, Allow %q", pr.StatusCode, pr.Header.Get("Allow"))
	}
	// Another well-known path is not this route's document: it needs a mandate.
	if resp, _ := get(t, client, srv.URL+"/.well-known/oauth-protected-resource/v2", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("another path: status %d", resp.StatusCode)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestRFC9728Section5_1EveryChallengeCarriesResourceMetadata(t *testing.T) {
	f := newFixture(t)
	h := f.newHandler(t, &Handler{Scopes: []string{"read"}})
	srv, client := serve(t, h, hello, false)
	writeOnly, _ := f.token(t, func(c *mandate.Claims) { c.Scope = "write" })
	param := `resource_metadata="` + testMetadataURL + `"`
	for name, auth := range map[string]string{
		"missing token":      "",
		"invalid token":      "Bearer abc",
		"insufficient scope": "Bearer " + writeOnly,
	} {
		resp, _ := get(t, client, srv.URL, auth)
		if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasSuffix(ch, ", "+param) || resp.StatusCode < 401 || resp.StatusCode > 403 {
			t.Errorf("%s: status %d, challenge %q", name, resp.StatusCode, ch)
		}
	}

	configured := f.newHandler(t, &Handler{ResourceMetadata: "https://gw.example/meta/api"})
	srv, client = serve(t, configured, hello, false)
	if resp, _ := get(t, client, srv.URL, ""); !strings.HasSuffix(resp.Header.Get("WWW-Authenticate"), `, resource_metadata="https://gw.example/meta/api"`) {
		t.Errorf("configured URL: challenge %q", resp.Header.Get("WWW-Authenticate"))
	}
	if resp, body := get(t, client, srv.URL+"/meta/api", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"resource":"`+testResource+`"`) {
		t.Errorf("configured URL: document at its path: status %d, %s", resp.StatusCode, body)
	}

	off := f.newHandler(t, &Handler{ResourceMetadata: "off"})
	srv, client = serve(t, off, hello, false)
	if resp, _ := get(t, client, srv.URL, ""); strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata") {
		t.Errorf("off: challenge %q", resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := get(t, client, srv.URL+"/.well-known/oauth-protected-resource/v1", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("off: the document is served (status %d)", resp.StatusCode)
	}
}

func TestResourceMetadataSettingIsChecked(t *testing.T) {
	for _, bad := range []string{"/relative", "ftp://x/y", "https://x/y?q=1", `https://x/"y`} {
		if _, err := newResourceMetadata(bad, "https://sts/zones/z", testResource, nil, nil); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	m, err := newResourceMetadata("", "https://sts/zones/z", "urn:x", nil, nil)
	if err != nil || m != nil {
		t.Fatalf("a resource that is no URL: %v, %v", m, err)
	}
	if got := scopesOf(nil, []string{"a", "allow"}, []string{"deny", "b", "a"}); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("scopesOf = %v", got)
	}
}
