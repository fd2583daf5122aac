package harden

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// placeholderRef matches {env.NAME} and {file.PATH}.
var placeholderRef = regexp.MustCompile(`\{(env|file)\.([^{}]+)\}`)

// ResolveFromEnvironment expands {env.NAME} from this process's environment and
// {file.PATH} from the file's contents (without a trailing newline), leaving a
// placeholder in place when its variable is unset or its file unreadable. It is the
// Resolve option of the harden command and of the start-up warning.
func ResolveFromEnvironment(s string) string {
	return placeholderRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := placeholderRef.FindStringSubmatch(m)
		if sub[1] == "env" {
			if v, ok := os.LookupEnv(sub[2]); ok {
				return v
			}
			return m
		}
		b, err := os.ReadFile(sub[2])
		if err != nil {
			return m
		}
		return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	})
}

func obj(v any, path ...string) map[string]any {
	m, _ := v.(map[string]any)
	for _, k := range path {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func list(m map[string]any, key string) []any {
	l, _ := m[key].([]any)
	return l
}

// duration reads a caddy.Duration field: nanoseconds as a number or a duration string.
func duration(m map[string]any, key string) (time.Duration, bool) {
	switch v := m[key].(type) {
	case float64:
		return time.Duration(v), true
	case string:
		d, err := caddy.ParseDuration(v)
		return d, err == nil
	}
	return 0, false
}

func (c *config) app(name string) map[string]any { return obj(c.root, "apps", name) }

// server is one HTTP server of the http app.
type server struct {
	name string
	m    map[string]any
}

func (c *config) servers() []server {
	srvs := obj(c.root, "apps", "http", "servers")
	names := make([]string, 0, len(srvs))
	for n := range srvs {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]server, 0, len(names))
	for _, n := range names {
		out = append(out, server{n, obj(srvs[n])})
	}
	return out
}

// handlers returns every handler object named name anywhere in v (routes, subroutes,
// error routes), in document order.
func handlers(v any, name string) []map[string]any {
	var out []map[string]any
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if str(x, "handler") == name {
				out = append(out, x)
			}
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(x[k])
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

// gateway is one caracal_mandate handler with where it sits.
type gateway struct {
	where string
	m     map[string]any
}

func (c *config) gateways() []gateway {
	var out []gateway
	for _, s := range c.servers() {
		for _, h := range handlers(s.m, "caracal_mandate") {
			out = append(out, gateway{fmt.Sprintf("http.servers.%s caracal_mandate(%s)", s.name, str(h, "resource")), h})
		}
	}
	return out
}

// revocation is one revocation configuration (the STS's or a gateway's).
type revocation struct {
	where string
	m     map[string]any
}

func (c *config) revocations() []revocation {
	defaults := obj(c.root, "apps", "caracal", "revocation")
	var out []revocation
	for _, r := range c.ownRevocations() {
		out = append(out, revocation{r.where, withDefaults(r.m, defaults)})
	}
	return out
}

// ownRevocations returns the revocation settings as each module writes them, without
// the caracal app's defaults.
func (c *config) ownRevocations() []revocation {
	var out []revocation
	if sts := c.app("caracal_sts"); sts != nil {
		out = append(out, revocation{"caracal_sts.revocation", obj(sts, "revocation")})
	}
	for _, g := range c.gateways() {
		out = append(out, revocation{g.where + ".revocation", obj(g.m, "revocation")})
	}
	return out
}

// withDefaults fills the settings m leaves unset from the caracal app's (defaults), as
// the modules do when they load: field by field, and no stream prefix for the local bus.
func withDefaults(m, defaults map[string]any) map[string]any {
	if len(defaults) == 0 {
		return m
	}
	out := make(map[string]any, len(defaults))
	for k, v := range m {
		out[k] = v
	}
	for _, k := range []string{"transport", "stream_key", "retention"} {
		if _, ok := out[k]; !ok && defaults[k] != nil {
			out[k] = defaults[k]
		}
	}
	if t := str(out, "transport"); t != "" && t != "local" && out["stream_prefix"] == nil && defaults["stream_prefix"] != nil {
		out["stream_prefix"] = defaults["stream_prefix"]
	}
	return out
}

// storages returns the storage configurations: the STS's, and the Coordinator's own
// when it sets one.
func (c *config) storages() []revocation {
	var out []revocation
	if sts := c.app("caracal_sts"); sts != nil {
		out = append(out, revocation{"caracal_sts.storage", obj(sts, "storage")})
	}
	if co := c.app("caracal_coordinator"); co != nil && obj(co, "storage") != nil {
		out = append(out, revocation{"caracal_coordinator.storage", obj(co, "storage")})
	}
	return out
}

// secret is a configured secret value.
type secret struct {
	where string
	value string
}

// secrets lists the secrets of the configuration except DSN passwords.
func (c *config) secrets() []secret {
	var out []secret
	add := func(where, v string) {
		if v != "" {
			out = append(out, secret{where, v})
		}
	}
	sts := c.app("caracal_sts")
	for _, z := range list(sts, "zones") {
		zm := obj(z)
		for _, a := range list(zm, "applications") {
			am := obj(a)
			add(fmt.Sprintf("caracal_sts.zones[%s].applications[%s].secret", str(zm, "id"), str(am, "client_id")), str(am, "secret"))
		}
	}
	add("caracal_sts.key_encryption_key", str(sts, "key_encryption_key"))
	add("caracal_coordinator.bootstrap_token", str(c.app("caracal_coordinator"), "bootstrap_token"))
	for _, r := range c.ownRevocations() {
		add(r.where+".stream_key", str(r.m, "stream_key"))
	}
	add("caracal.revocation.stream_key", str(obj(c.root, "apps", "caracal", "revocation"), "stream_key"))
	return out
}

// isLoopback reports whether host (a name or an address, without a port) stays on this
// machine; a path is a unix socket. An empty host is not loopback: in a listen address
// it means every interface.
func isLoopback(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.HasPrefix(host, "/") || strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostOnly strips a port from host[:port].
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
