package mcprules

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caracalgw/caracal/mandate"
)

// Keywords that stand in place of a rule's scope list.
const (
	// Allow lets any valid mandate through.
	Allow = "allow"
	// Deny refuses every mandate.
	Deny = "deny"
)

// Spec is the configuration of an MCP route (the JSON form of an mcp block).
type Spec struct {
	// Tools are the tool rules, matched against the tool name of tools/call.
	Tools []Rule `json:"tools,omitempty"`
	// Methods are the method rules, matched against the JSON-RPC method.
	Methods []Rule `json:"methods,omitempty"`
	// Default is what an unlisted tool or method needs: scopes, ["allow"], or
	// ["deny"]; empty means ["deny"].
	Default []string `json:"default,omitempty"`
}

// Rule maps a name or glob to what a call needs.
type Rule struct {
	// Match is an exact name or a glob where * stands for any run of characters.
	Match string `json:"match"`
	// Scopes must all be carried by the mandate; or the single word "allow" (any
	// valid mandate) or "deny" (never).
	Scopes []string `json:"scopes"`
}

// AddDirective adds one line of the rule language to s: `tool <name or glob>
// <scopes...>`, `method <method or glob> <scopes...>`, or `default <scopes...>`,
// with allow or deny in place of the scopes. Validation is Compile's.
func (s *Spec) AddDirective(args []string) error {
	if len(args) == 0 {
		return errors.New("empty MCP rule")
	}
	switch args[0] {
	case "tool", "method":
		if len(args) < 3 {
			return fmt.Errorf("%s rule needs a pattern and scopes (or allow, or deny): %q", args[0], strings.Join(args, " "))
		}
		r := Rule{Match: args[1], Scopes: slices.Clone(args[2:])}
		if args[0] == "tool" {
			s.Tools = append(s.Tools, r)
		} else {
			s.Methods = append(s.Methods, r)
		}
	case "default":
		if len(args) < 2 {
			return errors.New("default needs scopes, allow, or deny")
		}
		if s.Default != nil {
			return errors.New("default is set twice")
		}
		s.Default = slices.Clone(args[1:])
	default:
		return fmt.Errorf("unknown MCP rule %q (want tool, method or default)", args[0])
	}
	return nil
}

// requirement is what one rule asks of a mandate.
type requirement struct {
	scopes []string
	deny   bool
	// label names the rule in refusals and metrics: "tool search", "method tools/*",
	// "default".
	label string
	// pattern is the rule's Match ("" for the default).
	pattern string
}

func (r *requirement) satisfiedBy(granted string) bool {
	if r.deny {
		return false
	}
	for _, s := range r.scopes {
		if !mandate.ScopeGranted(granted, s) {
			return false
		}
	}
	return true
}

// glob is a compiled pattern: the literal parts between stars.
type glob struct {
	parts    []string
	literals int
	order    int
	req      *requirement
}

func (g *glob) match(s string) bool {
	first, last := g.parts[0], g.parts[len(g.parts)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	for _, p := range g.parts[1 : len(g.parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

// table is one kind of rule: exact names first, then globs from the most specific
// (most literal characters) to the least, ties in declaration order.
type table struct {
	exact map[string]*requirement
	globs []glob
}

func (t *table) lookup(name string) *requirement {
	if r, ok := t.exact[name]; ok {
		return r
	}
	for i := range t.globs {
		if t.globs[i].match(name) {
			return t.globs[i].req
		}
	}
	return nil
}

// Policy is a compiled Spec. It is safe for concurrent use.
type Policy struct {
	tools, methods table
	def            *requirement
}

// Compile validates s and builds its Policy.
func Compile(s Spec) (*Policy, error) {
	p := &Policy{}
	var err error
	if p.tools, err = compileTable("tool", s.Tools); err != nil {
		return nil, err
	}
	if p.methods, err = compileTable("method", s.Methods); err != nil {
		return nil, err
	}
	def := s.Default
	if len(def) == 0 {
		def = []string{Deny}
	}
	if p.def, err = compileScopes("default", "", def); err != nil {
		return nil, err
	}
	return p, nil
}

func compileTable(kind string, rules []Rule) (table, error) {
	t := table{exact: make(map[string]*requirement)}
	seen := make(map[string]bool)
	for i, r := range rules {
		if err := checkPattern(r.Match); err != nil {
			return t, fmt.Errorf("%s rule %d (%q): %w", kind, i+1, r.Match, err)
		}
		if seen[r.Match] {
			return t, fmt.Errorf("%s rule %q is declared twice", kind, r.Match)
		}
		seen[r.Match] = true
		req, err := compileScopes(kind+" "+r.Match, r.Match, r.Scopes)
		if err != nil {
			return t, err
		}
		if !strings.Contains(r.Match, "*") {
			t.exact[r.Match] = req
			continue
		}
		parts := strings.Split(r.Match, "*")
		t.globs = append(t.globs, glob{parts: parts, literals: len(r.Match) - (len(parts) - 1), order: i, req: req})
	}
	slices.SortStableFunc(t.globs, func(a, b glob) int { return b.literals - a.literals })
	return t, nil
}

func checkPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	if strings.Contains(p, "**") {
		return errors.New("write * once: it already matches any run of characters")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= 0x20 || c >= 0x7f {
			return fmt.Errorf("byte 0x%02x is not allowed in a pattern (visible ASCII only)", c)
		}
	}
	return nil
}

func compileScopes(label, pattern string, scopes []string) (*requirement, error) {
	req := &requirement{label: label, pattern: pattern}
	switch {
	case len(scopes) == 0:
		return nil, fmt.Errorf("%s: no scopes (write allow or deny to mean it)", label)
	case len(scopes) == 1 && scopes[0] == Deny:
		req.deny = true
		return req, nil
	case len(scopes) == 1 && scopes[0] == Allow:
		return req, nil
	}
	for _, s := range scopes {
		if s == Allow || s == Deny {
			return nil, fmt.Errorf("%s: %s stands alone, not among scopes", label, s)
		}
		if err := checkScopeToken(s); err != nil {
			return nil, fmt.Errorf("%s: scope %q: %w", label, s, err)
		}
		if !slices.Contains(req.scopes, s) {
			req.scopes = append(req.scopes, s)
		}
	}
	return req, nil
}

// checkScopeToken applies RFC 6749 section 3.3 (mandate.ValidScopeToken).
func checkScopeToken(s string) error {
	switch {
	case s == "":
		return errors.New("empty scope")
	case !mandate.ValidScopeToken(s):
		return fmt.Errorf("scope %.64q is not a scope token (RFC 6749 section 3.3)", s)
	}
	return nil
}

// Decision is the outcome of a message against a Policy.
type Decision struct {
	// Allowed is true when the mandate satisfies every rule that applies.
	Allowed bool
	// Method is the message's method ("" for a response).
	Method string
	// Tool is the tool name of a tools/call, "" otherwise.
	Tool string
	// Rule names the rule that refused ("tool search", "method tools/*", "default"),
	// "" when allowed.
	Rule string
	// Denied is true when the refusing rule is deny: no scope would help.
	Denied bool

	reqs    [2]*requirement
	granted string
}

// Needed returns, in rule order, every scope the call needs (the value of the
// insufficient_scope challenge's scope parameter); nil when a deny rule applies.
func (d Decision) Needed() []string {
	if d.Denied {
		return nil
	}
	var out []string
	for _, r := range d.reqs {
		if r == nil {
			continue
		}
		for _, s := range r.scopes {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// Missing returns the needed scopes the mandate does not carry.
func (d Decision) Missing() []string {
	var out []string
	for _, s := range d.Needed() {
		if !mandate.ScopeGranted(d.granted, s) {
			out = append(out, s)
		}
	}
	return out
}

// Reason is a one-line account of a refusal for the audit log.
func (d Decision) Reason() string {
	switch {
	case d.Allowed:
		return ""
	case d.Denied:
		return d.Rule + " denies"
	}
	return d.Rule + " needs " + strings.Join(d.Missing(), " ")
}

// Scope returns the scope parameter of the insufficient_scope challenge: the needed
// scopes, space-delimited; "" when a deny rule applies.
func (d Decision) Scope() string { return strings.Join(d.Needed(), " ") }

// Refusal returns the JSON-RPC error answering a refused message with id (nil for a
// notification): status 403, code CodeInsufficientScope, a message naming the
// refused tool or method and the missing scopes, and data carrying them as
// {"method", "tool", "required_scopes", "missing_scopes"} (scopes omitted under a
// deny rule). It returns nil when d allows.
func (d Decision) Refusal(id []byte) *Error {
	if d.Allowed {
		return nil
	}
	what := "method " + strconv.Quote(d.Method)
	if d.Method == "" {
		what = "a response"
	}
	if d.Tool != "" {
		what = "tool " + strconv.Quote(d.Tool)
	}
	msg := what + " is not permitted on this route"
	if !d.Denied {
		msg = what + " needs the scope " + strings.Join(d.Missing(), " ")
	}
	data := struct {
		Method   string   `json:"method,omitempty"`
		Tool     string   `json:"tool,omitempty"`
		Required []string `json:"required_scopes,omitempty"`
		Missing  []string `json:"missing_scopes,omitempty"`
	}{d.Method, d.Tool, d.Needed(), d.Missing()}
	raw, _ := json.Marshal(data)
	return &Error{Status: http.StatusForbidden, Code: CodeInsufficientScope, Message: msg, ID: id, Data: raw}
}

// Decide applies p to m for a mandate carrying the space-delimited scopes granted.
// A message needs what the method rule matching its method asks; a tools/call also
// needs what the tool rule matching its tool asks. When no rule of the kind that
// governs a message matches, the default applies: the tool rules govern a
// tools/call, the method rules every other message. A response has no method, so
// only the default applies to it.
func (p *Policy) Decide(granted string, m *Message) Decision {
	d := Decision{Method: m.Method, granted: granted}
	var methodReq *requirement
	if m.Kind != KindResponse {
		methodReq = p.methods.lookup(m.Method)
	}
	// A tools/call without an id is still a tool call to a lenient server.
	if m.Method == "tools/call" {
		d.Tool = m.Name
		toolReq := p.tools.lookup(m.Name)
		if toolReq == nil {
			toolReq = p.def
		}
		d.reqs = [2]*requirement{methodReq, toolReq}
	} else {
		if methodReq == nil {
			methodReq = p.def
		}
		d.reqs = [2]*requirement{methodReq, nil}
	}
	for _, r := range d.reqs {
		if r == nil {
			continue
		}
		if r.deny {
			d.Rule, d.Denied = r.label, true
			return d
		}
	}
	for _, r := range d.reqs {
		if r != nil && !r.satisfiedBy(granted) {
			d.Rule = r.label
			return d
		}
	}
	d.Allowed = true
	return d
}

// MayCall reports whether a mandate carrying granted may call tool: the test the
// tools/list filter keeps a tool by.
func (p *Policy) MayCall(granted, tool string) bool {
	m := Message{Kind: KindRequest, Method: "tools/call", Name: tool}
	return p.Decide(granted, &m).Allowed
}

// OtherLabel is the metric label of every tool or method no rule names.
const OtherLabel = "other"

// ToolLabel returns a metric label for tool with bounded cardinality: the tool name
// when an exact tool rule names it, the glob when a glob rule matches it, and
// OtherLabel otherwise.
func (p *Policy) ToolLabel(tool string) string {
	if r := p.tools.lookup(tool); r != nil {
		return r.pattern
	}
	return OtherLabel
}

// MethodLabel returns a metric label for method with bounded cardinality: the
// method when it belongs to the MCP core or an exact method rule names it, the glob
// of a matching glob rule, and OtherLabel otherwise.
func (p *Policy) MethodLabel(method string) string {
	if r := p.methods.lookup(method); r != nil {
		return r.pattern
	}
	if m, ok := knownMethods[method]; ok {
		return m
	}
	return OtherLabel
}
