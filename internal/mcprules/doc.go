// Package mcprules is the transport-independent core of MCP-aware routes: the rule
// language that says which scopes each tool and JSON-RPC method needs, the bounded
// parser that reads the method and the tool, prompt or resource name of a
// Streamable HTTP POST (and checks the Mcp-Method and Mcp-Name headers of the
// 2026-07-28 protocol revision against it), and the filters that remove from a
// tools/list response, JSON or server-sent events, the tools a mandate may not
// call. It knows nothing of Caddy; docs/mcp.md describes the whole feature.
//
// # Rules
//
//	tool   <name or glob>   <scope...> | allow | deny
//	method <method or glob> <scope...> | allow | deny
//	default                 <scope...> | allow | deny   (deny when absent)
//
// A rule's scopes must all be carried by the mandate; allow lets any valid mandate
// through and deny refuses every one. A glob's * stands for any run of characters,
// / included; patterns are visible ASCII and are compared case-sensitively.
//
// Matching order, within the tool rules and within the method rules: an exact
// name wins over every glob; among globs the one with the most literal (non-*)
// characters wins; globs with as many literal characters are tried in the order
// they are declared. So "tool admin_delete* deny" overrides "tool admin_* admin"
// whatever their order.
//
// A message needs what the method rule matching its method asks. A tools/call (with
// an id or, against the protocol, without one) also needs what the tool rule
// matching its tool asks, and the tool rules govern it: if
// no tool rule matches, the default applies to the tool, while a missing method
// rule for tools/call adds nothing. Any other message, notifications included,
// falls to the default when no method rule matches. A response posted by a client
// has no method, so only the default applies to it.
//
// # Scope convention
//
// A tool named <name> is guarded by the scope tool:<name> ("tool search
// tool:search"). The MCP resource declares one such scope per tool, zone grants
// list them, and a client asking the STS for the resource without a scope
// parameter gets a mandate narrowed to exactly the tools it is granted; the
// mcp_tools example bundle under policies/examples also accepts tool globs in
// grants.
//
// # What is never kept
//
// Parsing keeps the method, the name and the raw id, nothing of params.arguments.
// Refusals name the member at fault, never its value, so they can be logged and
// returned as they are.
package mcprules
