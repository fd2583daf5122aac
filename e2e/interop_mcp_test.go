package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// nodeMCP is the document mcp.mjs prints.
type nodeMCP struct {
	Server struct {
		Name string `json:"name"`
	} `json:"server"`
	Tools   []string `json:"tools"`
	Allowed struct {
		IsError bool   `json:"is_error"`
		Text    string `json:"text"`
	} `json:"allowed"`
	Delete struct {
		Refused bool   `json:"refused"`
		Name    string `json:"name"`
		Code    int    `json:"code"`
		Message string `json:"message"`
		IsError bool   `json:"is_error"`
		Text    string `json:"text"`
	} `json:"delete"`
	ScopeBeforeDelete string `json:"scope_before_delete"`
	MandateScope      string `json:"mandate_scope"`
}

// TestInteropMCPSDKClientCredentials connects an unmodified @modelcontextprotocol/sdk
// client (ClientCredentialsProvider) to the demo's MCP route: it finds the zone from
// the gateway's 401 and the RFC 9728 metadata, lists only the tool demo-agent is granted
// (filter_tools on), calls it, and is refused delete. When the zone grants tool:delete
// while a client holds its tool:search mandate, that client's delete works through the
// SDK's own step-up on the 403.
func TestInteropMCPSDKClientCredentials(t *testing.T) {
	nodeInstalled(t)
	in := start(t, demoCaddyfile(t, freePort(t)))
	run := func(pause func()) nodeMCP {
		t.Helper()
		raw := runNodePausing(t, in, "mcp.mjs", pause,
			"CARACAL_MCP_URL="+in.url("/mcp"), "CARACAL_ISSUER="+in.url("/zones/demo"), "CARACAL_CLIENT_ID="+demoClient, "CARACAL_CLIENT_SECRET="+demoSecret)
		t.Logf("mcp.mjs: %s", raw)
		var got nodeMCP
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("mcp.mjs printed %q: %v", raw, err)
		}
		if got.Server.Name != "caracal-demo" {
			t.Errorf("initialize: server %q", got.Server.Name)
		}
		if !slices.Equal(got.Tools, []string{"search"}) {
			t.Errorf("tools/list shows %v, want [search] only", got.Tools)
		}
		if got.Allowed.IsError || !strings.Contains(got.Allowed.Text, `match "caracal"`) {
			t.Errorf("tools/call search: %+v", got.Allowed)
		}
		return got
	}

	got := run(nil)
	// The SDK steps up on the 403 (a new client_credentials request, which the zone
	// answers with tool:search again) and gives up on the second 403.
	if !got.Delete.Refused || got.Delete.Code != 403 {
		t.Errorf("tools/call delete: %+v", got.Delete)
	}
	if got.MandateScope != "tool:search" {
		t.Errorf("the SDK's mandate carries %q, want tool:search", got.MandateScope)
	}

	got = run(func() { grantDemoAgentToolDelete(t, in) })
	// Listed and searched with tool:search, then granted: the same step-up now gets a
	// mandate with tool:delete, and the SDK's retry works.
	if got.ScopeBeforeDelete != "tool:search" {
		t.Errorf("before the grant the SDK's mandate carries %q, want tool:search", got.ScopeBeforeDelete)
	}
	if got.Delete.Refused || got.Delete.IsError || !strings.Contains(got.Delete.Text, `document "doc-1" deleted`) {
		t.Errorf("tools/call delete after the grant: %+v", got.Delete)
	}
	if got.MandateScope != "tool:search tool:delete" {
		t.Errorf("after the step-up the SDK's mandate carries %q, want tool:search tool:delete", got.MandateScope)
	}
}
