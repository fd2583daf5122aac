package caddystore_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caracalgw/caracal"
	"github.com/caracalgw/caracal/internal/caddystore"
)

const adminToken = "caddystore-test-admin-token"

// site is one configuration of an in-process Caddy: the STS and the Coordinator on the
// package's PostgreSQL database, with the given extra lines in each app's block.
type site struct {
	base             string
	sts, coordinator string
}

func newSite(t *testing.T) *site {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return &site{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
}

func (s *site) caddyfile() string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	caracal_sts {
		base_url %[1]s
		storage postgres %[2]s
		key_encryption_key 0000000000000000000000000000000000000000000000000000000000000001
		zone demo {
			application agent agent-secret-0123456789
			resource %[1]s/api read
		}
		%[4]s
	}
	caracal_coordinator {
		bootstrap_token %[3]s
		%[5]s
	}
}

%[1]s {
	caracal_sts
	caracal_coordinator
}
`, s.base, caddystore.PackageDatabase(), adminToken, s.sts, s.coordinator)
}

// load adapts and runs the site's configuration in place of the running one.
func (s *site) load(t *testing.T) error {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(s.caddyfile()), nil)
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v (%v)", err, warnings)
	}
	err = caddy.Load(cfg, true)
	// The replaced server closes its idle keep-alive connections; a POST sent on one of
	// them would fail with EOF (the client retries only idempotent requests).
	http.DefaultClient.CloseIdleConnections()
	return err
}

func stopCaddy(t *testing.T) {
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Error(err)
		}
	})
}

// relayIDs are the outbox relays running in the process.
func relayIDs() []string {
	var ids []string
	for _, r := range caddystore.RunningRelays() {
		ids = append(ids, r.ID())
	}
	return ids
}

// revoke creates a session and revokes it through the Coordinator, and reports whether
// the answer says the outbox rows were published (by a running relay).
func (s *site) revoke(t *testing.T) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.base+"/zones/demo/oauth2/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("agent:agent-secret-0123456789")))
	body := send(t, req)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("client_credentials: %s", body)
	}
	parts := strings.Split(tok.AccessToken, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	req, err = http.NewRequest(http.MethodPost, s.base+"/v1/zones/demo/sessions/"+claims.SID+"/revoke", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	var rev struct {
		Published *bool `json:"published"`
	}
	if body := send(t, req); json.Unmarshal(body, &rev) != nil || rev.Published == nil {
		t.Fatalf("revoke: %s", body)
	}
	return *rev.Published
}

func send(t *testing.T, req *http.Request) []byte {
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
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, body)
	}
	return body
}

// TestReloadKeepsOneRelay: the STS and the Coordinator of a configuration share one
// runtime and its one relay, which publishes the Coordinator's revocations; a reload
// that keeps the storage and the revocation transport keeps that relay running (no
// second one, not restarted); a reload that changes the transport replaces it.
func TestReloadKeepsOneRelay(t *testing.T) {
	s := newSite(t)
	if err := s.load(t); err != nil {
		t.Fatalf("loading the config: %v", err)
	}
	stopCaddy(t)
	first := relayIDs()
	if len(first) != 1 {
		t.Fatalf("running relays %v, want one for the STS and the Coordinator", first)
	}
	if !s.revoke(t) {
		t.Fatal("the Coordinator's revocation was not published")
	}

	s.coordinator = "sweep_interval 1m"
	if err := s.load(t); err != nil {
		t.Fatalf("reloading: %v", err)
	}
	if got := relayIDs(); len(got) != 1 || got[0] != first[0] {
		t.Fatalf("running relays after a reload %v, want %v still alone", got, first)
	}
	if !s.revoke(t) {
		t.Fatal("the Coordinator's revocation was not published after the reload")
	}

	s.sts = "revocation local {\n\t\t\tstream_key caddystore-test-stream-key\n\t\t}"
	if err := s.load(t); err != nil {
		t.Fatalf("reloading with another transport: %v", err)
	}
	if got := relayIDs(); len(got) != 1 || got[0] == first[0] {
		t.Fatalf("running relays after a transport change %v, want one new relay in place of %v", got, first)
	}
	if !s.revoke(t) {
		t.Fatal("the Coordinator's revocation was not published after the transport change")
	}
}

// TestCoordinatorStorageMustBeTheSTSs: a Coordinator storage option naming another
// storage than the STS's is refused; one naming the same storage is accepted.
func TestCoordinatorStorageMustBeTheSTSs(t *testing.T) {
	s := newSite(t)
	s.coordinator = "storage memory"
	err := s.load(t)
	if err == nil {
		stopCaddy(t)
		t.Fatal("a Coordinator on another storage than the STS was accepted")
	}
	if !strings.Contains(err.Error(), "storage differs from the caracal_sts app's") {
		t.Fatalf("load: %v, want the differing storage named", err)
	}
	if got := relayIDs(); len(got) != 0 {
		t.Fatalf("running relays after the refused config %v, want none", got)
	}

	s.coordinator = "storage postgres " + caddystore.PackageDatabase()
	if err := s.load(t); err != nil {
		t.Fatalf("a Coordinator naming the STS's storage: %v", err)
	}
	stopCaddy(t)
}
