package mcprules

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func mustCompile(t *testing.T, lines ...string) *Policy {
	t.Helper()
	var s Spec
	for _, l := range lines {
		if err := s.AddDirective(strings.Fields(l)); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
	}
	p, err := Compile(s)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

func call(tool string) *Message {
	return &Message{Kind: KindRequest, Method: "tools/call", Name: tool, ID: []byte("1")}
}

func req(method string) *Message {
	return &Message{Kind: KindRequest, Method: method, ID: []byte("1")}
}

func TestDecideTools(t *testing.T) {
	p := mustCompile(t,
		"tool search tool:search",
		"tool fetch tool:fetch net:read",
		"tool admin_* admin",
		"tool admin_delete* deny",
		"tool *_read reader",
		"tool open_thing allow",
		"method tools/list tools:list",
		"method initialize allow",
		"method notifications/* allow",
	)
	for _, tc := range []struct {
		granted, tool string
		allowed       bool
		rule          string
		needed        []string
		missing       []string
	}{
		{"tool:search", "search", true, "", []string{"tool:search"}, nil},
		{"tool:fetch", "search", false, "tool search", []string{"tool:search"}, []string{"tool:search"}},
		{"tool:fetch", "fetch", false, "tool fetch", []string{"tool:fetch", "net:read"}, []string{"net:read"}},
		{"net:read tool:fetch", "fetch", true, "", nil, nil},
		{"tool:searchx", "search", false, "tool search", []string{"tool:search"}, []string{"tool:search"}},
		// exact before glob, the longest glob first
		{"admin", "admin_delete_all", false, "tool admin_delete*", nil, nil},
		{"admin", "admin_list", true, "", nil, nil},
		// admin_* has six literal characters, *_read five: the more specific glob wins
		{"reader", "admin_read", false, "tool admin_*", []string{"admin"}, []string{"admin"}},
		{"reader", "file_read", true, "", nil, nil},
		{"", "open_thing", true, "", nil, nil},
		// unlisted tool: default deny
		{"tool:search tool:fetch admin", "unlisted", false, "default", nil, nil},
	} {
		d := p.Decide(tc.granted, call(tc.tool))
		if d.Allowed != tc.allowed || d.Rule != tc.rule || d.Tool != tc.tool || d.Method != "tools/call" {
			t.Errorf("%q calling %q: %+v; want allowed=%v rule=%q", tc.granted, tc.tool, d, tc.allowed, tc.rule)
			continue
		}
		if !tc.allowed {
			if got := d.Needed(); !slices.Equal(got, tc.needed) {
				t.Errorf("%q calling %q: needed %v, want %v", tc.granted, tc.tool, got, tc.needed)
			}
			if got := d.Missing(); !slices.Equal(got, tc.missing) {
				t.Errorf("%q calling %q: missing %v, want %v", tc.granted, tc.tool, got, tc.missing)
			}
			if d.Denied != (tc.needed == nil) || d.Reason() == "" {
				t.Errorf("%q calling %q: denied=%v reason=%q", tc.granted, tc.tool, d.Denied, d.Reason())
			}
		}
	}
}

func TestDecideMethods(t *testing.T) {
	p := mustCompile(t,
		"method tools/list tools:list",
		"method resources/* res:read",
		"method notifications/* allow",
		"tool search tool:search",
		"default base",
	)
	for _, tc := range []struct {
		granted string
		m       *Message
		allowed bool
		rule    string
	}{
		{"tools:list", req("tools/list"), true, ""},
		{"base", req("tools/list"), false, "method tools/list"},
		{"res:read", &Message{Kind: KindRequest, Method: "resources/read", Name: "file:///x"}, true, ""},
		{"", &Message{Kind: KindNotification, Method: "notifications/initialized"}, true, ""},
		// unlisted methods and responses fall to the default
		{"base", req("ping"), true, ""},
		{"tools:list", req("ping"), false, "default"},
		{"base", &Message{Kind: KindResponse, ID: []byte("1")}, true, ""},
		{"tools:list", &Message{Kind: KindResponse, ID: []byte("1")}, false, "default"},
		// the tool rule governs tools/call when no method rule names it
		{"tool:search", call("search"), true, ""},
		{"base", call("other"), true, ""},
		{"tool:search", call("other"), false, "default"},
		// a tools/call without an id is judged as a call all the same
		{"base", &Message{Kind: KindNotification, Method: "tools/call", Name: "search"}, false, "tool search"},
	} {
		d := p.Decide(tc.granted, tc.m)
		if d.Allowed != tc.allowed || d.Rule != tc.rule {
			t.Errorf("%q on %s %q: allowed=%v rule=%q; want %v %q", tc.granted, tc.m.Method, tc.m.Name, d.Allowed, d.Rule, tc.allowed, tc.rule)
		}
	}
}

// TestToolsCallNeedsTheMethodAndTheToolRule checks that a method rule matching
// tools/call adds to the tool rule, and the challenge names both.
func TestToolsCallNeedsTheMethodAndTheToolRule(t *testing.T) {
	p := mustCompile(t, "method tools/* mcp", "tool search tool:search")
	if d := p.Decide("mcp tool:search", call("search")); !d.Allowed {
		t.Fatalf("both scopes: %+v", d)
	}
	d := p.Decide("tool:search", call("search"))
	if d.Allowed || d.Rule != "method tools/*" || !slices.Equal(d.Needed(), []string{"mcp", "tool:search"}) || !slices.Equal(d.Missing(), []string{"mcp"}) {
		t.Fatalf("tool scope only: %+v needed=%v missing=%v", d, d.Needed(), d.Missing())
	}
	d = p.Decide("mcp", call("search"))
	if d.Allowed || d.Rule != "tool search" || !slices.Equal(d.Needed(), []string{"mcp", "tool:search"}) || d.Reason() != "tool search needs tool:search" {
		t.Fatalf("method scope only: %+v needed=%v reason=%q", d, d.Needed(), d.Reason())
	}
	if p := mustCompile(t, "method tools/call deny", "tool search allow"); p.Decide("x", call("search")).Allowed {
		t.Fatal("a deny method rule let tools/call through")
	}
}

func TestGlobTiesGoToTheFirstDeclared(t *testing.T) {
	p := mustCompile(t, "tool ab* first", "tool *ab second")
	if d := p.Decide("second", call("abab")); d.Allowed || d.Rule != "tool ab*" {
		t.Fatalf("abab: %+v", d)
	}
	p = mustCompile(t, "tool *ab second", "tool ab* first")
	if d := p.Decide("second", call("abab")); !d.Allowed {
		t.Fatalf("abab with the order swapped: %+v", d)
	}
	if d := p.Decide("first second", call("ab")); !d.Allowed {
		t.Fatalf("ab: %+v", d)
	}
	if d := p.Decide("first second", call("a")); d.Allowed || d.Rule != "default" {
		t.Fatalf("a matches neither glob: %+v", d)
	}
}

func TestDefaultIsDeny(t *testing.T) {
	p, err := Compile(Spec{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Message{call("search"), req("tools/list"), req("initialize"), {Kind: KindNotification, Method: "notifications/initialized"}} {
		if d := p.Decide("tool:search tools:list everything", m); d.Allowed || !d.Denied || d.Rule != "default" || d.Needed() != nil {
			t.Errorf("%s %s: %+v", m.Method, m.Name, d)
		}
	}
	if p := mustCompile(t, "default allow"); !p.Decide("", call("x")).Allowed {
		t.Error("default allow refused")
	}
}

func TestCompileRefusesBadRules(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Tools: []Rule{{Match: "", Scopes: []string{"a"}}}}, "empty pattern"},
		{Spec{Tools: []Rule{{Match: "a b", Scopes: []string{"a"}}}}, "not allowed in a pattern"},
		{Spec{Tools: []Rule{{Match: "sé", Scopes: []string{"a"}}}}, "not allowed in a pattern"},
		{Spec{Tools: []Rule{{Match: "a**", Scopes: []string{"a"}}}}, "write * once"},
		{Spec{Tools: []Rule{{Match: "a", Scopes: nil}}}, "no scopes"},
		{Spec{Tools: []Rule{{Match: "a", Scopes: []string{"x"}}, {Match: "a", Scopes: []string{"y"}}}}, "declared twice"},
		{Spec{Methods: []Rule{{Match: "tools/list", Scopes: []string{"allow", "x"}}}}, "stands alone"},
		{Spec{Methods: []Rule{{Match: "tools/list", Scopes: []string{`bad"scope`}}}}, "RFC 6749"},
		{Spec{Methods: []Rule{{Match: "tools/list", Scopes: []string{""}}}}, "empty scope"},
		{Spec{Default: []string{"deny", "x"}}, "stands alone"},
	} {
		_, err := Compile(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Compile(%+v) = %v, want an error containing %q", tc.spec, err, tc.want)
		}
	}
	var s Spec
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "empty"},
		{[]string{"tool", "search"}, "needs a pattern and scopes"},
		{[]string{"resource", "x", "y"}, "unknown MCP rule"},
		{[]string{"default"}, "default needs"},
	} {
		if err := s.AddDirective(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddDirective(%q) = %v, want %q", tc.args, err, tc.want)
		}
	}
	if err := s.AddDirective([]string{"default", "deny"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDirective([]string{"default", "allow"}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a second default: %v", err)
	}
}

func TestLabelsAreBounded(t *testing.T) {
	p := mustCompile(t, "tool search a", "tool fs_* b", "method x/custom c", "method ext/* d")
	for in, want := range map[string]string{"search": "search", "fs_read": "fs_*", "anything else": OtherLabel, "": OtherLabel} {
		if got := p.ToolLabel(in); got != want {
			t.Errorf("ToolLabel(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"tools/call": "tools/call", "x/custom": "x/custom", "ext/zzz": "ext/*", "random/" + strings.Repeat("z", 50): OtherLabel} {
		if got := p.MethodLabel(in); got != want {
			t.Errorf("MethodLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRefusal(t *testing.T) {
	p := mustCompile(t, "method tools/* mcp", "tool search tool:search", "tool rm deny", "method ping allow")
	if r := p.Decide("mcp tool:search", call("search")).Refusal([]byte("1")); r != nil {
		t.Fatalf("an allowed call has a refusal: %+v", r)
	}
	d := p.Decide("other", call("search"))
	if d.Scope() != "mcp tool:search" {
		t.Fatalf("Scope() = %q", d.Scope())
	}
	r := d.Refusal([]byte(`"req-1"`))
	if r.Status != 403 || r.Code != CodeInsufficientScope || string(r.ID) != `"req-1"` || r.Message != `tool "search" needs the scope mcp tool:search` {
		t.Fatalf("refusal = %+v", r)
	}
	checkErrorBody(t, r)
	var body struct {
		Error struct {
			Data struct {
				Method   string   `json:"method"`
				Tool     string   `json:"tool"`
				Required []string `json:"required_scopes"`
				Missing  []string `json:"missing_scopes"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.Body(), &body); err != nil {
		t.Fatal(err)
	}
	if dd := body.Error.Data; dd.Method != "tools/call" || dd.Tool != "search" || !slices.Equal(dd.Required, []string{"mcp", "tool:search"}) || !slices.Equal(dd.Missing, []string{"mcp", "tool:search"}) {
		t.Fatalf("data = %+v", dd)
	}

	d = p.Decide("mcp", call("rm\x01"))
	r = d.Refusal(nil)
	if d.Scope() != "" || r.Message != `tool "rm\x01" is not permitted on this route` {
		t.Fatalf("unlisted tool: scope %q, refusal %+v", d.Scope(), r)
	}
	checkErrorBody(t, r)
	d = p.Decide("mcp", call("rm"))
	if r := d.Refusal(nil); !d.Denied || !strings.Contains(string(r.Body()), `"data":{"method":"tools/call","tool":"rm"}`) {
		t.Fatalf("deny rule: %+v %s", d, r.Body())
	}
	r = p.Decide("x", &Message{Kind: KindNotification, Method: "notifications/initialized"}).Refusal(nil)
	if r.Message != `method "notifications/initialized" is not permitted on this route` || r.ID != nil {
		t.Fatalf("notification: %+v", r)
	}
	checkErrorBody(t, r)
	if r := p.Decide("x", &Message{Kind: KindResponse, ID: []byte("3")}).Refusal([]byte("3")); r.Message != "a response is not permitted on this route" {
		t.Fatalf("response: %+v", r)
	}
}
