package caracal_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestHandleErrorsCustomisesRefusals runs a configuration with two gateways: one whose
// server has handle_errors, which writes the body of a refusal while the handler's
// WWW-Authenticate header stays, and one without, where the handler answers itself.
func TestHandleErrorsCustomisesRefusals(t *testing.T) {
	custom, plain := freePort(t), freePort(t)
	src := fmt.Sprintf(`{
	admin off
	persist_config off
	default_bind 127.0.0.1
	auto_https off
	caracal {
		issuer http://127.0.0.1:%[1]d/zones/he
	}
	caracal_sts {
		base_url http://127.0.0.1:%[1]d
		storage memory
		zone he {
			resource http://api.he.test read
		}
	}
}

http://127.0.0.1:%[1]d {
	caracal_mandate {
		resource http://api.he.test
		scopes read
	}
	respond "through"
	handle_errors {
		respond "custom {http.error.status_code} [{http.auth.caracal.error}] {http.auth.caracal.error_description}"
	}
}

http://127.0.0.1:%[2]d {
	caracal_mandate {
		resource http://api.he.test
		scopes read
	}
	respond "through"
}
`, custom, plain)
	cfg, err := adapt(t, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })

	get := func(port int, auth string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}

	// No token: 401 without an error code, before any revocation state matters.
	resp, body := get(custom, "")
	if resp.StatusCode != http.StatusUnauthorized || body != "custom 401 [] a bearer mandate is required" {
		t.Fatalf("handle_errors, no token: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="http://api.he.test", scope="read", resource_metadata="http://api.he.test/.well-known/oauth-protected-resource"` {
		t.Fatalf("handle_errors, no token: WWW-Authenticate %q", got)
	}
	resp, body = get(plain, "")
	if resp.StatusCode != http.StatusUnauthorized || strings.TrimSpace(body) != "a bearer mandate is required" || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no handle_errors, no token: %d %q, WWW-Authenticate %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}

	// A token that is no mandate: invalid_token, once the revocation state is fresh (the
	// STS's first heartbeat; until then the answer is 503 with Retry-After, which goes
	// through handle_errors too).
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body = get(custom, "Bearer not-a-mandate")
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		if resp.Header.Get("Retry-After") == "" || !strings.HasPrefix(body, "custom 503 [] ") {
			t.Fatalf("handle_errors, stale: %d %q, Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(body, "custom 401 [invalid_token] ") {
		t.Fatalf("handle_errors, bad token: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
		t.Fatalf("handle_errors, bad token: WWW-Authenticate %q", got)
	}
}
