package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
)

// TestDemoMCPThroughTheGateway drives Caddyfile.example's MCP route as an MCP client
// does: a 401 pointing at the RFC 9728 metadata, the metadata naming the zone, then
// with demo-agent's mandate (granted tool:search only) a listing showing search alone,
// search answered, fetch and delete refused with the step-up challenge, and a
// streaming search cut by the revocation of the session.
func TestDemoMCPThroughTheGateway(t *testing.T) {
	upstream := freePort(t)
	in := start(t, demoCaddyfile(t, upstream))
	resource := in.url("/mcp")
	metadataURL := in.url("/.well-known/oauth-protected-resource/mcp")

	get, _ := http.NewRequest(http.MethodGet, metadataURL, nil)
	resp, body := in.do(t, get)
	var md struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported"`
		BearerMethods        []string `json:"bearer_methods_supported"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &md) != nil || md.Resource != resource ||
		!slices.Equal(md.AuthorizationServers, []string{in.url("/zones/demo")}) ||
		!slices.Equal(md.ScopesSupported, []string{"tool:search", "tool:fetch", "tool:delete"}) ||
		!slices.Equal(md.BearerMethods, []string{"header"}) {
		t.Fatalf("metadata: %d %s", resp.StatusCode, body)
	}

	// The API route points to and serves its own document.
	get, _ = http.NewRequest(http.MethodGet, in.url("/.well-known/oauth-protected-resource/api"), nil)
	if resp, body = in.do(t, get); resp.StatusCode != http.StatusOK || json.Unmarshal(body, &md) != nil || md.Resource != in.url("/api") {
		t.Fatalf("the API's metadata: %d %s", resp.StatusCode, body)
	}

	post := func(token, msg string) (*http.Response, []byte) {
		t.Helper()
		return mcpPost(t, in, resource, token, msg)
	}
	resp, body = post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`)
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.HasSuffix(ch, `, resource_metadata="`+metadataURL+`"`) {
		t.Fatalf("without a mandate: %d, challenge %q, %s", resp.StatusCode, ch, body)
	}

	session := in.session(t, "demo", "demo-agent", "demo-secret-change-me")
	mandate := in.mandate(t, "demo", session, resource, "")
	if got := claimsOf(t, mandate).Scope; got != "tool:search" {
		t.Fatalf("demo-agent's mandate carries %q, want tool:search", got)
	}
	resp, body = post(mandate, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"protocolVersion":"2025-06-18"`) {
		t.Fatalf("initialize: %d %s", resp.StatusCode, body)
	}
	if resp, body = post(mandate, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("notifications/initialized: %d %s", resp.StatusCode, body)
	}
	resp, body = post(mandate, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	var list struct {
		Result struct {
			Tools []struct{ Name string } `json:"tools"`
		} `json:"result"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Result.Tools) != 1 || list.Result.Tools[0].Name != "search" {
		t.Fatalf("tools/list: %d %s", resp.StatusCode, body)
	}
	resp, body = post(mandate, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{"query":"caracal"}}}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `match \"caracal\"`) {
		t.Fatalf("tools/call search: %d %s", resp.StatusCode, body)
	}
	for _, tool := range []string{"fetch", "delete"} {
		resp, body = post(mandate, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"`+tool+`","arguments":{"id":"doc-1"}}}`)
		ch := resp.Header.Get("WWW-Authenticate")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(ch, `error="insufficient_scope"`) ||
			!strings.Contains(ch, `scope="tool:`+tool+`"`) || !strings.HasSuffix(ch, `, resource_metadata="`+metadataURL+`"`) ||
			!strings.Contains(string(body), `"code":-31403`) {
			t.Fatalf("tools/call %s: %d, challenge %q, %s", tool, resp.StatusCode, ch, body)
		}
	}

	// A streaming tool call is cut when the agent revokes its session.
	client := in.newClient(t, true, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, resource, strings.NewReader(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"search","arguments":{"query":"long","steps":600}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+mandate)
	stream, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	br := bufio.NewReader(stream.Body)
	if line, err := br.ReadString('\n'); err != nil || stream.StatusCode != http.StatusOK || !strings.Contains(line, "step 1 of 600") {
		t.Fatalf("streaming call: %d %q %v", stream.StatusCode, line, err)
	}
	in.revoke(t, "demo", session)
	_, err = testenv.BodyEnd(t, br)
	testenv.AssertAborted(t, err, true)
}

// TestDemoMCPStepUp walks the step-up an MCP client makes on the demo: demo-agent's
// mandate (tool:search) is refused delete with the challenge naming tool:delete, an
// exchange asking for tool:delete is denied by the zone's policy, then an admin uploads
// a bundle version (the default policy with tool:delete added to demo-agent's grant on
// the MCP resource), and a mandate re-issued for tool:delete gets the tool's answer.
func TestDemoMCPStepUp(t *testing.T) {
	upstream := freePort(t)
	in := start(t, demoCaddyfile(t, upstream))
	resource := in.url("/mcp")
	metadataURL := in.url("/.well-known/oauth-protected-resource/mcp")
	const deleteCall = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete","arguments":{"id":"doc-1"}}}`

	session := in.session(t, "demo", "demo-agent", "demo-secret-change-me")
	mandate := in.mandate(t, "demo", session, resource, "")
	if got := claimsOf(t, mandate).Scope; got != "tool:search" {
		t.Fatalf("demo-agent's mandate carries %q, want tool:search", got)
	}
	resp, body := mcpPost(t, in, resource, mandate, deleteCall)
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(ch, `error="insufficient_scope"`) ||
		!strings.Contains(ch, `scope="tool:delete"`) || !strings.HasSuffix(ch, `, resource_metadata="`+metadataURL+`"`) ||
		!strings.Contains(string(body), `"code":-31403`) || !strings.Contains(string(body), `"tool":"delete"`) {
		t.Fatalf("delete with tool:search: %d, challenge %q, %s", resp.StatusCode, ch, body)
	}

	// The scope the challenge names is not granted yet: the policy denies the exchange.
	exchange := func() (*http.Response, []byte) {
		t.Helper()
		form := url.Values{
			"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":      {session},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
			"resource":           {resource},
			"scope":              {"tool:delete"},
		}
		return in.postForm(t, "/zones/demo/oauth2/token", form.Encode())
	}
	if resp, body = exchange(); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"error":"access_denied"`) {
		t.Fatalf("exchange for tool:delete before the grant: %d %s", resp.StatusCode, body)
	}

	grantDemoAgentToolDelete(t, in)

	// The same session steps up: a mandate re-issued for tool:delete, and the call works.
	resp, body = exchange()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange for tool:delete after the grant: %d %s", resp.StatusCode, body)
	}
	stepped := accessToken(t, body)
	if got := claimsOf(t, stepped).Scope; got != "tool:delete" {
		t.Fatalf("the re-issued mandate carries %q, want tool:delete", got)
	}
	resp, body = mcpPost(t, in, resource, stepped, deleteCall)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `document \"doc-1\" deleted`) {
		t.Fatalf("delete with tool:delete: %d %s", resp.StatusCode, body)
	}
	// The re-issued mandate carries only what it asked for: search is now the refused one.
	resp, body = mcpPost(t, in, resource, stepped, `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"search","arguments":{"query":"caracal"}}}`)
	if ch := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusForbidden || !strings.Contains(ch, `scope="tool:search"`) {
		t.Fatalf("search with tool:delete: %d, challenge %q, %s", resp.StatusCode, ch, body)
	}
}

// grantDemoAgentToolDelete uploads a new version of the demo zone's bundle: the default
// policy, with tool:delete added to demo-agent's grants on the MCP resource.
func grantDemoAgentToolDelete(t *testing.T, in *instance) {
	t.Helper()
	resource := in.url("/mcp")
	rego, err := os.ReadFile("../policies/default/authz.rego")
	if err != nil {
		t.Fatal(err)
	}
	bundle := map[string]any{
		"modules": map[string]string{"authz.rego": string(rego)},
		"data": map[string]any{"grants": map[string]any{"demo-agent": map[string][]string{
			in.url("/api"): {"read", "write"},
			resource:       {"tool:search", "tool:delete"},
		}}},
	}
	var put struct {
		Version int64 `json:"version"`
	}
	if code := in.adminCall(t, http.MethodPut, "/v1/zones/demo/policy", "demo-admin-token-change-me", bundle, &put); code != http.StatusOK || put.Version < 1 {
		t.Fatalf("policy upload: %d, version %d", code, put.Version)
	}
}

// mcpPost sends one JSON-RPC message to the MCP endpoint at resource as an MCP client
// does, with the mandate when token is not empty.
func mcpPost(t *testing.T, in *instance, resource, token, msg string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, resource, strings.NewReader(msg))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return in.do(t, req)
}
