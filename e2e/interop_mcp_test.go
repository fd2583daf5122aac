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
	Refused struct {
		Refused bool   `json:"refused"`
		Name    string `json:"name"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"refused"`
	MandateScope string `json:"mandate_scope"`
}

// TestInteropMCPSDKClientCredentials connects an unmodified @modelcontextprotocol/sdk
// client (ClientCredentialsProvider) to the demo's MCP route: it finds the zone from
// the gateway's 401 and the RFC 9728 metadata, lists only the tool demo-agent is granted (filter_tools on),
// calls it, and is refused delete.
func TestInteropMCPSDKClientCredentials(t *testing.T) {
	nodeInstalled(t)
	in := start(t, demoCaddyfile(t, freePort(t)))
	raw := runNode(t, in, "mcp.mjs",
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
	// The SDK steps up on the 403 (a client_credentials request with scope
	// tool:delete, which the zone does not grant) and gives up with the 403.
	if !got.Refused.Refused || got.Refused.Code != 403 {
		t.Errorf("tools/call delete: %+v", got.Refused)
	}
	if got.MandateScope != "tool:search" {
		t.Errorf("the SDK's mandate carries %q, want tool:search", got.MandateScope)
	}
}
