package policy_test

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/types"

	"github.com/caracalgw/caracal/internal/policy"
)

// TestEveryBuiltinIsClassified fails when OPA offers a built-in that is neither
// allowed nor denied by name (an upgrade added one: classify it), when a list names a
// built-in OPA no longer has, and when the sandbox offers anything but the allowlist.
func TestEveryBuiltinIsClassified(t *testing.T) {
	allowed, denied := policy.AllowedBuiltins(), policy.DeniedBuiltins()
	known := map[string]bool{}
	for _, b := range ast.CapabilitiesForThisVersion().Builtins {
		known[b.Name] = true
		_, isDenied := denied[b.Name]
		isAllowed := slices.Contains(allowed, b.Name)
		switch {
		case isAllowed && isDenied:
			t.Errorf("built-in %s is both allowed and denied", b.Name)
		case !isAllowed && !isDenied:
			t.Errorf("built-in %s is not classified: add it to allowedBuiltins (if pure) or deniedBuiltins", b.Name)
		}
	}
	for _, name := range allowed {
		if !known[name] {
			t.Errorf("allowed built-in %s is unknown to this OPA version", name)
		}
	}
	for name, reason := range denied {
		if !known[name] {
			t.Errorf("denied built-in %s is unknown to this OPA version", name)
		}
		if reason == "" {
			t.Errorf("denied built-in %s has no reason", name)
		}
	}
	caps := policy.Capabilities()
	var offered []string
	for _, b := range caps.Builtins {
		offered = append(offered, b.Name)
	}
	slices.Sort(offered)
	if !slices.Equal(offered, allowed) {
		t.Errorf("capabilities offer %v, want exactly the allowlist %v", offered, allowed)
	}
	if caps.AllowNet == nil || len(caps.AllowNet) != 0 {
		t.Errorf("AllowNet = %#v, want an empty, non-nil list", caps.AllowNet)
	}
}

// probe is a loopback listener that counts connections, and a named pipe that
// counts the times it is opened for reading (and then hands the reader a secret that
// must never surface).
type probe struct {
	url, path, secret string
	conns, reads      atomic.Int64
}

func newProbe(t *testing.T) *probe {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{url: "http://" + ln.Addr().String() + "/x", secret: "caracal-sandbox-secret-7f3a"}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	p.path = filepath.Join(t.TempDir(), "secret.json")
	if err := syscall.Mkfifo(p.path, 0o600); err != nil {
		t.Fatal(err)
	}
	var closing atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// Opening a FIFO for writing blocks until someone opens it for reading.
			f, err := os.OpenFile(p.path, os.O_WRONLY, 0)
			if err != nil || closing.Load() {
				if f != nil {
					_ = f.Close()
				}
				return
			}
			p.reads.Add(1)
			_, _ = f.WriteString(`{"` + p.secret + `": true}`)
			_ = f.Close()
		}
	}()
	t.Cleanup(func() {
		closing.Store(true)
		// Release the writer blocked in open.
		if r, err := os.OpenFile(p.path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			<-done
			_ = r.Close()
		}
	})
	return p
}

// sample writes a Rego literal of type tp whose strings are all s; where the type
// allows a string or something else, str picks the string.
func sample(tp types.Type, s string, str bool) string {
	q := strconv.Quote(s)
	switch tp := tp.(type) {
	case types.Null:
		return "null"
	case types.Boolean:
		return "true"
	case types.Number:
		return "1"
	case types.String:
		return q
	case *types.Array:
		var elems []string
		for i := range tp.Len() {
			elems = append(elems, sample(tp.Select(i), s, str))
		}
		if d := tp.Dynamic(); d != nil {
			elems = append(elems, sample(d, s, str))
		}
		return "[" + strings.Join(elems, ", ") + "]"
	case *types.Set:
		return "{" + sample(tp.Of(), s, str) + "}"
	case *types.Object:
		var items []string
		for _, k := range tp.Keys() {
			items = append(items, fmt.Sprintf("%q: %s", fmt.Sprint(k), sample(tp.Select(k), s, str)))
		}
		if dp := tp.DynamicProperties(); dp != nil {
			items = append(items, fmt.Sprintf("%s: %s", sample(dp.Key, s, str), sample(dp.Value, s, str)))
			if types.Contains(dp.Key, types.S) {
				// Keys that reference or fetch, in case a built-in reads them.
				for _, k := range []string{"$ref", "url", "jku", "x5u", "cert", "file"} {
					items = append(items, fmt.Sprintf("%q: %s", k, sample(dp.Value, s, str)))
				}
			}
		}
		return "{" + strings.Join(items, ", ") + "}"
	case types.Any:
		if len(tp) == 0 {
			return q
		}
		for _, alt := range tp {
			if _, isString := alt.(types.String); isString == str {
				return sample(alt, s, str)
			}
		}
		return sample(tp[0], s, str)
	}
	return q
}

// jwtWithKeyURLs is an unsigned-looking JWT whose header points at u for its keys.
func jwtWithKeyURLs(u string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","jku":"`+u+`","x5u":"`+u+`"}`)) + "." + enc([]byte(`{"iss":"`+u+`"}`)) + ".c2ln"
}

// operators that have no call form worth exercising with URLs.
var notCalledByName = []string{"assign", "eq"}

// TestAllowedBuiltinsPerformNoIO calls every allowed built-in, through the engine,
// with arguments made of a loopback URL, a file:// URL and the plain path of a file
// the test wrote: no connection may reach the listener and no decision may carry the
// file's content.
func TestAllowedBuiltinsPerformNoIO(t *testing.T) {
	p := newProbe(t)
	overrides := map[string][]string{
		"io.jwt.decode_verify": {strconv.Quote(jwtWithKeyURLs(p.url)), `{"cert": "` + p.url + `", "iss": "` + p.url + `"}`},
		"time.clock":           {`[0, "` + p.path + `"]`},
		"time.date":            {`[0, "` + p.path + `"]`},
		"time.weekday":         {`[0, "` + p.path + `"]`},
		"time.format":          {`[0, "` + p.path + `", "2006"]`},
	}
	for _, v := range []string{"rs256", "rs384", "rs512", "ps256", "ps384", "ps512", "es256", "es384", "es512", "hs256", "hs384", "hs512", "eddsa"} {
		overrides["io.jwt.verify_"+v] = []string{strconv.Quote(jwtWithKeyURLs(p.url)), strconv.Quote(p.url)}
	}
	overrides["io.jwt.decode"] = []string{strconv.Quote(jwtWithKeyURLs(p.url))}
	decls := map[string]*ast.Builtin{}
	for _, b := range policy.Capabilities().Builtins {
		decls[b.Name] = b
	}
	for _, name := range policy.AllowedBuiltins() {
		if slices.Contains(notCalledByName, name) {
			continue
		}
		b := decls[name]
		for i, s := range []string{p.url, "file://" + p.path, p.path, p.url, "file://" + p.path} {
			args := overrides[name]
			if args == nil {
				str := i < 3
				for _, a := range b.Decl.FuncArgs().Args {
					args = append(args, sample(a, s, str))
				}
				if v := b.Decl.FuncArgs().Variadic; v != nil {
					args = append(args, sample(v, s, str))
				}
			}
			src := fmt.Sprintf(`package caracal.authz

r := %s(%s)

decision := {"decision": "deny", "evaluation_status": "complete", "reasons": [json.marshal(r)]}
`, name, strings.Join(args, ", "))
			e := newEngine()
			if err := e.Load(t.Context(), "acme", bundle("acme", 1, src)); err != nil {
				if strings.Contains(err.Error(), p.secret) {
					t.Fatalf("%s: compile error carries the file's content: %v", name, err)
				}
				t.Fatalf("%s: the probe does not compile: %v\n%s", name, err, src)
			}
			d := e.Evaluate(t.Context(), "acme", exchange("billing-agent"))
			if strings.Contains(d.Reason, p.secret) || slices.ContainsFunc(d.Reasons, func(r string) bool { return strings.Contains(r, p.secret) }) {
				t.Fatalf("%s(%s) surfaced the file's content: %+v", name, s, d)
			}
		}
	}
	if n, r := p.conns.Load(), p.reads.Load(); n != 0 || r != 0 {
		t.Fatalf("allowed built-ins made %d connections to the listener and opened the file %d times", n, r)
	}
}

// TestDeniedBuiltinsAreRefusedAtCompileTime loads, for every denied built-in, a
// bundle that calls it with the probe's URL and file: the load fails naming the
// built-in, the zone is deny-all, and nothing reaches the listener or the file.
func TestDeniedBuiltinsAreRefusedAtCompileTime(t *testing.T) {
	p := newProbe(t)
	calls := map[string]string{
		"json.match_schema":  `json.match_schema({}, {"$ref": "` + p.url + `"})`,
		"json.verify_schema": `json.verify_schema({"$ref": "file://` + p.path + `"})`,
		"http.send":          `http.send({"method": "GET", "url": "` + p.url + `"})`,
		"opa.runtime":        `opa.runtime()`,
		"time.now_ns":        `time.now_ns()`,
		"print":              `print("` + p.url + `")`,
	}
	for name := range policy.DeniedBuiltins() {
		call := calls[name]
		if call == "" {
			call = name + `("` + p.url + `")`
		}
		src := "package caracal.authz\n\nr := " + call + "\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\", \"r\": r}\n"
		e := newEngine()
		err := e.Load(t.Context(), "acme", bundle("acme", 1, src))
		if err == nil || !strings.Contains(err.Error(), "built-in "+name+",") {
			t.Errorf("%s: Load = %v, want a refusal naming the built-in", name, err)
			continue
		}
		if strings.Contains(err.Error(), p.secret) {
			t.Errorf("%s: the refusal carries the file's content: %v", name, err)
		}
		if d := e.Evaluate(t.Context(), "acme", exchange("billing-agent")); d.Allow || strings.Contains(d.Reason, p.secret) {
			t.Errorf("%s: decision = %+v, want a compile-failure deny", name, d)
		}
		if verr := policy.Validate(t.Context(), map[string]string{"authz.rego": src}, nil); verr == nil || !strings.Contains(verr.Error(), name) {
			t.Errorf("%s: Validate = %v, want a refusal naming the built-in", name, verr)
		}
	}
	// Mocking a denied built-in with `with` is refused too.
	withSrc := "package caracal.authz\n\nf(_) := {}\n\ndecision := {\"decision\": \"allow\", \"evaluation_status\": \"complete\"} if { true with http.send as f }\n"
	if err := policy.Validate(t.Context(), map[string]string{"authz.rego": withSrc}, nil); err == nil || !strings.Contains(err.Error(), "http.send") {
		t.Errorf("with http.send: Validate = %v, want a refusal naming the built-in", err)
	}
	if n, r := p.conns.Load(), p.reads.Load(); n != 0 || r != 0 {
		t.Fatalf("denied built-ins made %d connections to the listener and opened the file %d times", n, r)
	}
}
