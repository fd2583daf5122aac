package coordinator_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caracalgw/caracal"
	"github.com/caracalgw/caracal/internal/testenv"
)

const adminToken = "coordinator-test-admin-token"

// process runs one in-process Caddy with the STS, the Coordinator and a gateway in
// front of a resource answering 200, on the memory store and the given revocation
// transport line (empty for the local bus), used by the STS and the gateway alike, and
// returns its base URL.
func process(t *testing.T, revocation string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	caracal_sts {
		base_url %[1]s
		%[3]s
		zone demo {
			application agent agent-secret-0123456789
			resource %[1]s/api read
			policy default
			grant agent %[1]s/api read
		}
	}
	caracal_coordinator {
		bootstrap_token %[2]s
	}
}

%[1]s {
	caracal_sts
	caracal_coordinator
	handle /api/* {
		caracal_mandate {
			issuer %[1]s/zones/demo
			resource %[1]s/api
			scopes read
			%[3]s
		}
		respond "ok" 200
	}
}
`, base, adminToken, revocation)
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warnings, err := adapter.Adapt([]byte(caddyfile), nil)
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v (%v)", err, warnings)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Error(err)
		}
	})
	return base
}

func post(t *testing.T, target string, form url.Values, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return send(t, req)
}

func send(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func accessToken(t *testing.T, body []byte) string {
	t.Helper()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		t.Fatalf("no access token in %s", body)
	}
	return tr.AccessToken
}

func sid(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.SID
}

// TestAdminRevokeHoldsInTheProcess runs the Caddy modules as one process would: right
// after the admin session revoke's 200, the process's STS refuses the session's
// exchange and its gateway refuses the mandate issued before, 0 of 100, on the local
// bus and on Redis (a stream prefix of its own on the shared server).
func TestAdminRevokeHoldsInTheProcess(t *testing.T) {
	t.Run("local", func(t *testing.T) { revokeInProcess(t, process(t, "")) })
	t.Run("redis", func(t *testing.T) {
		prefix := fmt.Sprintf("caracal-test-%d-%d:", time.Now().UnixNano(), rand.Uint64())
		revokeInProcess(t, process(t, "revocation "+testenv.RequireRedis(t)+" {\nstream_prefix "+prefix+"\n}"))
	})
}

func revokeInProcess(t *testing.T, base string) {
	token := base + "/zones/demo/oauth2/token"
	call := func(mandate string) int {
		req, err := http.NewRequest(http.MethodGet, base+"/api/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+mandate)
		code, _ := send(t, req)
		return code
	}
	exchange := func(session string) (int, []byte) {
		return post(t, token, url.Values{
			"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {session},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "resource": {base + "/api"}, "scope": {"read"},
		})
	}
	admitted := 0
	for i := range 100 {
		code, body := post(t, token, url.Values{"grant_type": {"client_credentials"}}, "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("agent:agent-secret-0123456789")))
		if code != http.StatusOK {
			t.Fatalf("client_credentials: %d %s", code, body)
		}
		session := accessToken(t, body)
		code, body = exchange(session)
		if code != http.StatusOK {
			t.Fatalf("exchange before the revocation: %d %s", code, body)
		}
		mandate := accessToken(t, body)
		if code := call(mandate); code != http.StatusOK {
			t.Fatalf("gateway before the revocation: %d", code)
		}
		req, err := http.NewRequest(http.MethodPost, base+"/v1/zones/demo/sessions/"+sid(t, session)+"/revoke", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminToken)
		code, body = send(t, req)
		if code != http.StatusOK {
			t.Fatalf("revoke %d: %d %s", i, code, body)
		}
		var rev struct {
			Published bool `json:"published"`
		}
		if err := json.Unmarshal(body, &rev); err != nil || !rev.Published {
			t.Fatalf("revoke answer %s: want published with the transport up", body)
		}
		if code, _ := exchange(session); code == http.StatusOK {
			admitted++
		}
		if code := call(mandate); code == http.StatusOK {
			admitted++
		}
	}
	if admitted != 0 {
		t.Fatalf("%d exchanges or gateway requests admitted right after 100 admin revocations, want 0", admitted)
	}
}
