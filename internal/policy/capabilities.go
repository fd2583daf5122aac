package policy

import (
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Zone bundles are written by zone administrators, who are not trusted with the
// process, and run inside it. The engine therefore offers them an allowlist: a
// built-in is available only if it is named below and computes its result from its
// arguments alone (no network, no file system, no process state, no clock, no
// randomness, no log output). Every built-in OPA knows must appear in exactly one of
// the two lists; TestEveryBuiltinIsClassified fails on an OPA upgrade that adds one,
// and until it is classified an unlisted built-in is simply not offered.

// allowedBuiltins are the pure built-ins zone policies may call.
var allowedBuiltins = []string{
	// Operators and the machinery of `in`, `every` and template strings.
	"assign", "eq", "equal", "neq", "gt", "gte", "lt", "lte",
	"plus", "minus", "mul", "div", "rem", "abs", "and", "or",
	"internal.member_2", "internal.member_3", "internal.template_string",
	// Numbers, aggregates and types.
	"ceil", "floor", "round", "numbers.range", "numbers.range_step", "format_int", "to_number",
	"count", "sum", "product", "max", "min", "sort",
	"is_array", "is_boolean", "is_null", "is_number", "is_object", "is_set", "is_string", "type_name",
	"bits.and", "bits.or", "bits.xor", "bits.negate", "bits.lsh", "bits.rsh",
	"units.parse", "units.parse_bytes",
	// Collections.
	"array.concat", "array.flatten", "array.reverse", "array.slice",
	"intersection", "union",
	"object.filter", "object.get", "object.keys", "object.remove", "object.subset", "object.union", "object.union_n",
	"walk", "graph.reachable", "graph.reachable_paths",
	// Strings. regex.* and glob.* compile their pattern (RE2 and gobwas/glob: linear
	// matching, no backtracking); OPA caches compiled patterns in a bounded cache.
	"concat", "contains", "endswith", "startswith", "indexof", "indexof_n", "lower", "upper",
	"replace", "split", "sprintf", "substring", "trim", "trim_left", "trim_prefix", "trim_right",
	"trim_space", "trim_suffix", "strings.any_prefix_match", "strings.any_suffix_match",
	"strings.count", "strings.replace_n", "strings.reverse", "strings.split_n",
	"regex.find_all_string_submatch_n", "regex.find_n", "regex.globs_match", "regex.is_valid",
	"regex.match", "regex.replace", "regex.split", "regex.template_match",
	"glob.match", "glob.quote_meta",
	"semver.compare", "semver.is_valid", "uuid.parse",
	// Encodings.
	"base64.decode", "base64.encode", "base64.is_valid", "base64url.decode", "base64url.encode",
	"base64url.encode_no_pad", "hex.decode", "hex.encode",
	"json.filter", "json.is_valid", "json.marshal", "json.marshal_with_options", "json.patch",
	"json.remove", "json.unmarshal", "yaml.is_valid", "yaml.marshal", "yaml.unmarshal",
	"urlquery.decode", "urlquery.decode_object", "urlquery.encode", "urlquery.encode_object",
	"uri.is_valid", "uri.parse",
	// Time arithmetic on given instants. Zone names resolve in Go's time-zone database
	// (the embedded copy, or the system's zoneinfo; Go refuses absolute names and "..").
	"time.add_date", "time.clock", "time.date", "time.diff", "time.format", "time.parse_duration_ns",
	"time.parse_ns", "time.parse_rfc3339_ns", "time.weekday",
	// Hashes, MACs, and parsing and verification against keys and certificates given as
	// arguments: nothing is fetched (no jku/x5u, no AIA, no system roots).
	"crypto.hmac.equal", "crypto.hmac.md5", "crypto.hmac.sha1", "crypto.hmac.sha256", "crypto.hmac.sha512",
	"crypto.md5", "crypto.sha1", "crypto.sha256", "crypto.parse_private_keys",
	"crypto.x509.parse_and_verify_certificates", "crypto.x509.parse_and_verify_certificates_with_options",
	"crypto.x509.parse_certificate_request", "crypto.x509.parse_certificates", "crypto.x509.parse_keypair",
	"crypto.x509.parse_rsa_private_key",
	"io.jwt.decode", "io.jwt.decode_verify", "io.jwt.verify_eddsa",
	"io.jwt.verify_es256", "io.jwt.verify_es384", "io.jwt.verify_es512",
	"io.jwt.verify_hs256", "io.jwt.verify_hs384", "io.jwt.verify_hs512",
	"io.jwt.verify_ps256", "io.jwt.verify_ps384", "io.jwt.verify_ps512",
	"io.jwt.verify_rs256", "io.jwt.verify_rs384", "io.jwt.verify_rs512",
	// Annotations of the policy's own rules.
	"rego.metadata.chain", "rego.metadata.rule",
}

// deniedBuiltins are the built-ins zone policies may not call, with the reason an
// upload that calls one is refused.
var deniedBuiltins = map[string]string{
	"http.send":                 "it sends HTTP requests from the gateway",
	"net.lookup_ip_addr":        "it resolves names through the gateway's DNS",
	"net.cidr_contains":         "net.* is not offered (the input carries no addresses)",
	"net.cidr_contains_matches": "net.* is not offered (the input carries no addresses)",
	"net.cidr_expand":           "net.* is not offered (it expands a range into memory)",
	"net.cidr_intersects":       "net.* is not offered (the input carries no addresses)",
	"net.cidr_is_valid":         "net.* is not offered (the input carries no addresses)",
	"net.cidr_merge":            "net.* is not offered (the input carries no addresses)",
	"net.cidr_overlap":          "net.* is not offered (the input carries no addresses)",
	"json.match_schema":         "it loads schema $ref documents from the network and the file system",
	"json.verify_schema":        "it loads schema $ref documents from the network and the file system",
	"opa.runtime":               "it exposes the process's configuration and environment",
	"print":                     "it writes to the process log",
	"internal.print":            "it writes to the process log",
	"trace":                     "it writes to the evaluation trace",
	"time.now_ns":               "it reads the clock; use input.time",
	"rand.intn":                 "it is random; a decision must depend on its input only",
	"uuid.rfc4122":              "it is random; a decision must depend on its input only",
	"io.jwt.encode_sign":        "it signs with random nonces; a policy has no token to mint",
	"io.jwt.encode_sign_raw":    "it signs with random nonces; a policy has no token to mint",
	"providers.aws.sign_req":    "it signs outbound requests against the clock; a policy sends none",
	"strings.render_template":   "it runs a Go text/template, which the evaluation timeout cannot interrupt",
	"rego.parse_module":         "it parses Rego at evaluation time, outside the bundle limits",
	"graphql.is_valid":          "graphql.* is not offered (no GraphQL in the input; large parser surface)",
	"graphql.parse":             "graphql.* is not offered (no GraphQL in the input; large parser surface)",
	"graphql.parse_and_verify":  "graphql.* is not offered (no GraphQL in the input; large parser surface)",
	"graphql.parse_query":       "graphql.* is not offered (no GraphQL in the input; large parser surface)",
	"graphql.parse_schema":      "graphql.* is not offered (no GraphQL in the input; large parser surface)",
	"graphql.schema_is_valid":   "graphql.* is not offered (no GraphQL in the input; large parser surface)",
	"internal.test_case":        "it belongs to OPA's test runner",
	// Deprecated: Rego v1, the only syntax bundles are parsed as, refuses them anyway.
	"all":          "deprecated (Rego v1 refuses it)",
	"any":          "deprecated (Rego v1 refuses it)",
	"cast_array":   "deprecated (Rego v1 refuses it)",
	"cast_boolean": "deprecated (Rego v1 refuses it)",
	"cast_null":    "deprecated (Rego v1 refuses it)",
	"cast_object":  "deprecated (Rego v1 refuses it)",
	"cast_set":     "deprecated (Rego v1 refuses it)",
	"cast_string":  "deprecated (Rego v1 refuses it)",
	"re_match":     "deprecated (Rego v1 refuses it)",
	"set_diff":     "deprecated (Rego v1 refuses it)",
}

// AllowedBuiltins returns the names of the built-ins zone policies may call, sorted.
func AllowedBuiltins() []string { return slices.Sorted(slices.Values(allowedBuiltins)) }

// DeniedBuiltins returns the refused built-ins and why, as a new map.
func DeniedBuiltins() map[string]string {
	return maps.Clone(deniedBuiltins)
}

// capabilities is OPA's capability set for this version restricted to
// allowedBuiltins, with no network access (AllowNet empty, not nil: nil would mean
// any host). A bundle calling anything else fails to compile.
var capabilities = sync.OnceValue(func() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		return !slices.Contains(allowedBuiltins, b.Name)
	})
	c.AllowNet = []string{}
	return c
})

// checkDeniedCalls reports the first call in m of a denied built-in, by name and
// reason, so an upload learns why it was refused rather than "undefined function".
func checkDeniedCalls(name string, m *ast.Module) error {
	var found error
	visit := func(op ast.Ref) {
		if found != nil {
			return
		}
		builtin := op.String()
		if reason, ok := deniedBuiltins[builtin]; ok {
			found = fmt.Errorf("module %q calls built-in %s, which zone policies may not use: %s", name, builtin, reason)
		}
	}
	ast.WalkExprs(m, func(e *ast.Expr) bool {
		if e.IsCall() {
			visit(e.Operator())
		}
		for _, w := range e.With {
			if r, ok := w.Target.Value.(ast.Ref); ok {
				visit(r)
			}
		}
		return false
	})
	ast.WalkTerms(m, func(t *ast.Term) bool {
		if c, ok := t.Value.(ast.Call); ok && len(c) > 0 {
			if r, ok := c[0].Value.(ast.Ref); ok {
				visit(r)
			}
		}
		return false
	})
	return found
}
