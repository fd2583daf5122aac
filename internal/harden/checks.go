package harden

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// MinBootstrapToken is the shortest bootstrap token the checklist accepts.
const MinBootstrapToken = 32

const (
	maxSession    = 24 * time.Hour
	maxMandate    = 15 * time.Minute
	maxCheckBytes = 65536
	// defaultCheckBytes is the gateway's default re-check interval (caddymodules).
	defaultCheckBytes = 4096
)

func checkDemoSecrets(c *config) []Finding {
	var out []Finding
	for _, s := range c.secrets() {
		v, ok := c.resolve(s.value)
		if ok && strings.HasSuffix(v, "-change-me") {
			out = append(out, Finding{Level: Fail, Where: s.where,
				Message: "is a published demo value (…-change-me)",
				Fix:     "generate a new secret, e.g. `openssl rand -base64 32`, and provide it through {env.*} or {file.*}"})
		}
	}
	co := c.app("caracal_coordinator")
	tok := str(co, "bootstrap_token")
	if tok == "" {
		return out
	}
	v, ok := c.resolve(tok)
	switch {
	case !ok:
		out = append(out, Finding{Level: Warn, Where: "caracal_coordinator.bootstrap_token",
			Message: "cannot check the length: its placeholder is not set in this environment",
			Fix:     fmt.Sprintf("make sure the token has at least %d random characters", MinBootstrapToken)})
	case len(v) < MinBootstrapToken:
		out = append(out, Finding{Level: Fail, Where: "caracal_coordinator.bootstrap_token",
			Message: fmt.Sprintf("is %d characters, fewer than %d", len(v), MinBootstrapToken),
			Fix:     "use at least 32 random characters, e.g. `openssl rand -base64 32`, or remove it and use minted admin tokens"})
	}
	return out
}

// dsnPassword matches a password keyword in a key/value DSN or a URL query.
var dsnPassword = regexp.MustCompile(`(?:^|[\s?&])password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)`)

// passwordOf returns the password a DSN carries, if any.
func passwordOf(dsn string) string {
	if m := dsnPassword.FindStringSubmatch(dsn); m != nil {
		return strings.Trim(m[1], "'")
	}
	rest, ok := strings.CutPrefix(dsn, "postgres://")
	if !ok {
		rest, ok = strings.CutPrefix(dsn, "postgresql://")
	}
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, _ := strings.Cut(rest[:at], ":")
	return pw
}

const placeholderFix = "put the secret in the environment or a file and write {env.NAME} or {file./path} in the configuration"

func checkLiteralSecrets(c *config) []Finding {
	var out []Finding
	for _, s := range c.secrets() {
		if !runtimePlaceholder.MatchString(s.value) {
			out = append(out, Finding{Level: Fail, Where: s.where,
				Message: "is written in the configuration (Caddy keeps the adapted configuration in autosave.json and serves it on GET /config/)",
				Fix:     placeholderFix})
		}
	}
	for _, st := range c.storages() {
		dsn := str(st.m, "dsn")
		if runtimePlaceholder.MatchString(dsn) {
			continue
		}
		if pw := passwordOf(dsn); pw != "" && !runtimePlaceholder.MatchString(pw) {
			out = append(out, Finding{Level: Fail, Where: st.where + ".dsn",
				Message: "carries a literal password",
				Fix:     "write the whole DSN, or its password, as {env.NAME}, or leave the password out and use PGPASSFILE"})
		}
	}
	return append(out, c.caddyfileSubstitutions()...)
}

// secretArg maps a Caddyfile keyword to the index of its secret argument.
var secretArg = map[string]int{
	"bootstrap_token":    0,
	"key_encryption_key": 0,
	"stream_key":         0,
	"application":        1,
	"storage":            1,
}

// caddyfileSubstitutions finds secrets written as {$VAR} in the Caddyfile text: the
// adapter substitutes them while adapting, so the value ends up in the JSON
// configuration as if it had been written there.
func (c *config) caddyfileSubstitutions() []Finding {
	if len(c.opts.Caddyfile) == 0 {
		return nil
	}
	toks, err := caddyfile.Tokenize(c.opts.Caddyfile, c.opts.Filename)
	if err != nil {
		return []Finding{{Level: Warn, Where: c.opts.Filename, Message: "cannot tokenize the Caddyfile to look for {$VAR} secrets: " + err.Error(), Fix: "fix the Caddyfile"}}
	}
	var out []Finding
	for i, t := range toks {
		idx, ok := secretArg[t.Text]
		if !ok || t.Quoted() {
			continue
		}
		var args []string
		for _, a := range toks[i+1:] {
			if a.Line != t.Line || a.File != t.File || a.Text == "{" || a.Text == "}" {
				break
			}
			args = append(args, a.Text)
		}
		if idx >= len(args) || !strings.Contains(args[idx], "{$") {
			continue
		}
		f := Finding{Level: Fail, Where: fmt.Sprintf("%s:%d %s", t.File, t.Line, t.Text),
			Message: "takes its secret from {$VAR}, which the adapter substitutes into the JSON configuration",
			Fix:     "write {env.VAR} instead: it is expanded when the module starts and never stored"}
		if t.Text == "storage" {
			f.Level = Warn
			f.Message = "takes its DSN from {$VAR}; a password in it ends up in the JSON configuration"
		}
		out = append(out, f)
	}
	return out
}

func isRedis(transport string) bool {
	return strings.HasPrefix(transport, "redis://") || strings.HasPrefix(transport, "rediss://") || strings.HasPrefix(transport, "unix://")
}

func checkStorage(c *config) []Finding {
	redis := false
	for _, r := range c.revocations() {
		t, _ := c.resolve(str(r.m, "transport"))
		redis = redis || isRedis(t)
	}
	var out []Finding
	for _, st := range c.storages() {
		if d := str(st.m, "driver"); d != "" && d != "memory" {
			continue
		}
		if redis {
			out = append(out, Finding{Level: Fail, Where: st.where,
				Message: "is the memory store while revocations travel on Redis: every process has its own zones, keys and sessions",
				Fix:     "use storage postgres <dsn> with a key_encryption_key in every process"})
			continue
		}
		out = append(out, Finding{Level: Warn, Where: st.where,
			Message: "is the memory store: zones, keys, sessions and revocations are lost on restart",
			Fix:     "use storage postgres <dsn> with a key_encryption_key"})
	}
	return out
}

func checkStreamKey(c *config) []Finding {
	var out []Finding
	for _, r := range c.revocations() {
		t, _ := c.resolve(str(r.m, "transport"))
		if isRedis(t) && str(r.m, "stream_key") == "" {
			out = append(out, Finding{Level: Fail, Where: r.where,
				Message: "uses Redis without a stream_key: anyone who can write to Redis can forge or suppress revocation entries",
				Fix:     "set stream_key {env.CARACAL_STREAM_KEY} (at least 16 random characters, the same in every process)"})
		}
	}
	return out
}

// unresolved is the finding of a transport check that could not see the address.
func unresolved(where string) Finding {
	return Finding{Level: Warn, Where: where,
		Message: "cannot check: its placeholder is not set in this environment",
		Fix:     "run caracal harden with the production environment, or check by hand that the address is loopback or uses TLS"}
}

func checkTransportTLS(c *config) []Finding {
	var out []Finding
	for _, r := range c.revocations() {
		raw := str(r.m, "transport")
		t, ok := c.resolve(raw)
		if !ok {
			out = append(out, unresolved(r.where+".transport"))
			continue
		}
		if !strings.HasPrefix(t, "redis://") {
			continue
		}
		u, err := url.Parse(t)
		if err != nil || !isLoopback(u.Hostname()) {
			out = append(out, Finding{Level: Fail, Where: r.where + ".transport",
				Message: "reaches Redis in plain text on a non-loopback address",
				Fix:     "use rediss:// (TLS) or keep Redis on loopback"})
		}
	}
	for _, st := range c.storages() {
		if str(st.m, "driver") != "postgres" {
			continue
		}
		dsn, ok := c.resolve(str(st.m, "dsn"))
		if !ok {
			out = append(out, unresolved(st.where+".dsn"))
			continue
		}
		if f, bad := postgresTLS(dsn); bad {
			f.Where = st.where + ".dsn"
			out = append(out, f)
		}
	}
	if raw := str(obj(c.app("caracal_sts"), "policy"), "remote_url"); raw != "" {
		if f, bad := c.httpURL(raw, "caracal_sts.policy.remote_url", "sends every policy input (client, resource, scopes) to OPA"); bad {
			out = append(out, f)
		}
	}
	if raw := str(c.app("caracal"), "issuer"); raw != "" {
		if f, bad := c.httpURL(raw, "caracal.issuer", "fetches the zone's signing keys"); bad {
			out = append(out, f)
		}
	}
	for _, g := range c.gateways() {
		if f, bad := c.httpURL(str(g.m, "issuer"), g.where+".issuer", "fetches the zone's signing keys"); bad {
			out = append(out, f)
		}
		if ex := obj(g.m, "exchange"); ex != nil && str(ex, "token_endpoint") != "" {
			if f, bad := c.httpURL(str(ex, "token_endpoint"), g.where+".exchange.token_endpoint", "sends session mandates to the STS"); bad {
				out = append(out, f)
			}
		}
	}
	return out
}

// httpURL reports a plain-HTTP URL to a non-loopback host.
func (c *config) httpURL(raw, where, what string) (Finding, bool) {
	v, ok := c.resolve(raw)
	if !ok {
		return unresolved(where), true
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "http" || isLoopback(u.Hostname()) {
		return Finding{}, false
	}
	return Finding{Level: Fail, Where: where,
		Message: what + " over plain HTTP on a non-loopback address",
		Fix:     "use https://"}, true
}

// pgKeyword matches host= and sslmode= in a key/value DSN or a URL query.
var pgKeyword = regexp.MustCompile(`(?:^|[\s?&])(host|sslmode)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)`)

// postgresTLS judges a DSN's sslmode for its hosts.
func postgresTLS(dsn string) (Finding, bool) {
	var hosts []string
	mode := ""
	for _, m := range pgKeyword.FindAllStringSubmatch(dsn, -1) {
		v := strings.Trim(m[2], "'")
		if m[1] == "sslmode" {
			mode = v
		} else {
			hosts = append(hosts, strings.Split(v, ",")...)
		}
	}
	if rest, ok := strings.CutPrefix(dsn, "postgres://"); ok || strings.HasPrefix(dsn, "postgresql://") {
		if !ok {
			rest = strings.TrimPrefix(dsn, "postgresql://")
		}
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			rest = rest[:i]
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = rest[at+1:]
		}
		for _, h := range strings.Split(rest, ",") {
			hosts = append(hosts, hostOnly(h))
		}
	}
	remote := false
	for _, h := range hosts {
		// No host is the default unix socket.
		remote = remote || (h != "" && !isLoopback(h))
	}
	if !remote {
		return Finding{}, false
	}
	switch mode {
	case "verify-full", "verify-ca":
		return Finding{}, false
	case "require":
		return Finding{Level: Warn, Message: "uses TLS without verifying the server certificate (sslmode=require)",
			Fix: "use sslmode=verify-full with sslrootcert"}, true
	case "", "prefer":
		return Finding{Level: Warn, Message: "may fall back to plain text on a non-loopback address (sslmode=" + or(mode, "prefer, the default") + ")",
			Fix: "use sslmode=verify-full with sslrootcert"}, true
	default:
		return Finding{Level: Fail, Message: "reaches PostgreSQL without TLS on a non-loopback address (sslmode=" + mode + ")",
			Fix: "use sslmode=verify-full with sslrootcert"}, true
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func checkOnStale(c *config) []Finding {
	var out []Finding
	for _, g := range c.gateways() {
		if str(g.m, "on_stale") == "allow" {
			out = append(out, Finding{Level: Fail, Where: g.where + ".on_stale",
				Message: "is allow: while revocation state is stale (e.g. Redis unreachable) revoked mandates are accepted",
				Fix:     "remove on_stale allow (the default is deny: answer 503)"})
		}
	}
	return out
}

func checkLifetimes(c *config) []Finding {
	sts := c.app("caracal_sts")
	var out []Finding
	for _, f := range []struct {
		key string
		max time.Duration
	}{{"session_lifetime", maxSession}, {"max_session_lifetime", maxSession}, {"mandate_lifetime", maxMandate}} {
		if d, ok := duration(sts, f.key); ok && d > f.max {
			out = append(out, Finding{Level: Fail, Where: "caracal_sts." + f.key,
				Message: fmt.Sprintf("is %s, above the recommended %s: a stolen mandate stays valid that long unless revoked", d, f.max),
				Fix:     fmt.Sprintf("set %s to at most %s", f.key, f.max)})
		}
	}
	return out
}

func checkCheckBytes(c *config) []Finding {
	var out []Finding
	for _, g := range c.gateways() {
		n, _ := g.m["check_bytes"].(float64)
		switch {
		case n > maxCheckBytes:
			out = append(out, Finding{Level: Fail, Where: g.where + ".check_bytes",
				Message: fmt.Sprintf("is %d: after a revocation up to that many response bytes still reach the client", int(n)),
				Fix:     fmt.Sprintf("leave check_bytes at its default (%d) or keep it at most %d", defaultCheckBytes, maxCheckBytes)})
		case n > defaultCheckBytes:
			out = append(out, Finding{Level: Warn, Where: g.where + ".check_bytes",
				Message: fmt.Sprintf("is %d, above the default %d", int(n), defaultCheckBytes),
				Fix:     "lower it unless the throughput gain was measured and is needed"})
		}
	}
	return out
}

func checkAdmin(c *config) []Finding {
	admin := obj(c.root, "admin")
	if b, _ := admin["disabled"].(bool); b {
		return nil
	}
	var out []Finding
	if listen := str(admin, "listen"); listen != "" {
		na, err := caddy.ParseNetworkAddress(listen)
		if err != nil {
			out = append(out, Finding{Level: Fail, Where: "admin.listen", Message: "cannot parse: " + err.Error(), Fix: "use localhost:2019 or a unix socket"})
		} else if !na.IsUnixNetwork() && !isLoopback(na.Host) {
			out = append(out, Finding{Level: Fail, Where: "admin.listen",
				Message: "is " + listen + ", not loopback: whoever reaches it can replace the whole configuration",
				Fix:     "use localhost:2019 or a unix socket (admin unix//run/caracal/admin.sock), or admin off"})
		}
	}
	if obj(admin, "remote") != nil {
		out = append(out, Finding{Level: Warn, Where: "admin.remote",
			Message: "the remote admin endpoint is enabled (mutual TLS)",
			Fix:     "check that its access list grants only the paths and methods operators need"})
	}
	return out
}

func checkMandateTLS(c *config) []Finding {
	httpPort := 80
	if p, ok := obj(c.root, "apps", "http")["http_port"].(float64); ok {
		httpPort = int(p)
	}
	var out []Finding
	for _, s := range c.servers() {
		if len(handlers(s.m, "caracal_mandate")) == 0 || serverTLS(s.m, httpPort) {
			continue
		}
		f := Finding{Level: Fail, Where: "http.servers." + s.name,
			Message: "routes to caracal_mandate without TLS: mandates cross the network in plain text",
			Fix:     "serve the site over https:// (a certificate, or automatic HTTPS)"}
		if loopbackOnly(s.m) {
			f.Level = Warn
			f.Message = "routes to caracal_mandate without TLS on loopback only"
			f.Fix = "make sure a TLS-terminating proxy on this machine is the only client"
		}
		out = append(out, f)
	}
	return out
}

// serverTLS reports whether Caddy serves the server over TLS: it has connection policies,
// or automatic HTTPS applies to one of its host names.
func serverTLS(s map[string]any, httpPort int) bool {
	if _, ok := s["tls_connection_policies"]; ok {
		return true
	}
	auto := obj(s, "automatic_https")
	if b, _ := auto["disable"].(bool); b {
		return false
	}
	other := false
	for _, l := range list(s, "listen") {
		ls, _ := l.(string)
		na, err := caddy.ParseNetworkAddress(ls)
		if err != nil || na.IsUnixNetwork() || na.StartPort != uint(httpPort) {
			other = true
		}
	}
	if !other {
		return false
	}
	skip := map[string]bool{}
	for _, h := range list(auto, "skip") {
		hs, _ := h.(string)
		skip[hs] = true
	}
	for _, m := range matchers(s) {
		for _, h := range list(m, "host") {
			if hs, _ := h.(string); hs != "" && !skip[hs] {
				return true
			}
		}
	}
	return false
}

// matchers returns every matcher set in the server's routes, nested ones included.
func matchers(v any) []map[string]any {
	var out []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if k == "match" {
					for _, m := range list(x, "match") {
						out = append(out, obj(m))
					}
					continue
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

func loopbackOnly(s map[string]any) bool {
	ls := list(s, "listen")
	for _, l := range ls {
		str, _ := l.(string)
		na, err := caddy.ParseNetworkAddress(str)
		if err != nil || (!na.IsUnixNetwork() && !isLoopback(na.Host)) {
			return false
		}
	}
	return len(ls) > 0
}

func checkDemoModules(c *config) []Finding {
	var out []Finding
	for _, s := range c.servers() {
		if len(handlers(s.m, "caracal_demo_upstream")) > 0 {
			out = append(out, Finding{Level: Fail, Where: "http.servers." + s.name,
				Message: "serves caracal_demo_upstream, the demo's upstream API",
				Fix:     "remove the demo site and point reverse_proxy at the real upstream"})
		}
	}
	return out
}
