package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

// testActivationDelay is the key activation delay of the split deployment tests: short,
// since the gateways hear of a rotation on the revocation stream and refetch at once.
const testActivationDelay = 4 * time.Second

// splitSTS is the STS+Coordinator node of a split deployment: zones alpha and beta,
// PostgreSQL storage, Redis revocation, no gateway routes.
func splitSTS(storage, revocationLine string) func(port, admin int) string {
	return stsNode("", storage, revocationLine, "")
}

// stsNode is splitSTS with the issuer base URL given (empty: the node's own address), so
// that several STS processes can serve one issuer, and extra lines in caracal_sts.
func stsNode(base, storage, revocationLine, extra string) func(port, admin int) string {
	return func(port, admin int) string {
		base := base
		if base == "" {
			base = fmt.Sprintf("https://localhost:%d", port)
		}
		return fmt.Sprintf(`{
	admin 127.0.0.1:%[2]d
	default_bind 127.0.0.1
	skip_install_trust
	auto_https disable_redirects
	caracal_sts {
		base_url %[3]s
		%[4]s
		key_encryption_key %[5]s
		%[6]s
		key_activation_delay %[7]s
		%[8]s
		%[10]s
	}
	caracal_coordinator {
		bootstrap_token %[9]s
	}
}

https://localhost:%[1]d {
	tls internal
	caracal_sts
	caracal_coordinator
}
`, port, admin, base, storage, testKEK, revocationLine, testActivationDelay, zones(base), adminToken, extra)
	}
}

// splitGateway is a gateway-only node: no caracal_sts app, so the zone's keys are
// fetched from the STS at base over HTTPS, trusting the STS's internal CA through
// tls_trust_pool.
func splitGateway(t testing.TB, base, caFile, revocationLine string) func(port, admin int) string {
	demo := freePort(t)
	return func(port, admin int) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%[2]d
	default_bind 127.0.0.1
	skip_install_trust
	auto_https disable_redirects
}

https://localhost:%[1]d {
	tls internal
	handle /api/* {
		caracal_mandate {
			issuer %[3]s/zones/alpha
			resource %[3]s/api
			scopes read
			%[4]s
			tls_trust_pool file %[5]s
		}
		reverse_proxy 127.0.0.1:%[6]d
	}
}

http://:%[6]d {
	caracal_demo_upstream
}
`, port, admin, base, revocationLine, caFile, demo)
	}
}

func rootFile(in *instance) string {
	return filepath.Join(in.dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
}

type rotateAnswer struct {
	KID         string   `json:"kid"`
	ActivatesAt string   `json:"activates_at"`
	Revoked     []string `json:"revoked_kids"`
}

func (in *instance) rotate(t testing.TB, query string) rotateAnswer {
	t.Helper()
	var rot rotateAnswer
	if code := in.adminCall(t, http.MethodPost, "/v1/zones/alpha/keys/rotate"+query, adminToken, nil, &rot); code != http.StatusOK {
		t.Fatalf("rotate%s: status %d", query, code)
	}
	return rot
}

func kidOf(t testing.TB, token string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.KID
}

// TestSplitDeploymentKeyRotation runs an STS+Coordinator node and two gateway-only nodes
// fetching the zone's keys over HTTPS: a rotation refuses no valid mandate, an immediate
// rotation gets the old key's mandates refused at both gateways.
func TestSplitDeploymentKeyRotation(t *testing.T) {
	rs := newRedisStreams(t)
	t.Cleanup(func() { _ = rs.client.Del(context.Background(), rs.prefix+revocation.StreamKeys).Err() })
	rev := rs.revocation(rs.url)
	sts := start(t, splitSTS(postgresStorage(t), rev))
	base := sts.url("")
	gws := []*instance{
		start(t, splitGateway(t, base, rootFile(sts), rev)),
		start(t, splitGateway(t, base, rootFile(sts), rev)),
	}
	clients := []*http.Client{gws[0].newClient(t, true, 2), gws[1].newClient(t, true, 2)}

	t.Run("a rotation refuses no valid mandate", func(t *testing.T) {
		_, first := sts.agentMandate(t, base)
		oldKID := kidOf(t, first)
		rot := sts.rotate(t, "")
		if rot.KID == oldKID || len(rot.Revoked) != 0 {
			t.Fatalf("rotation answered %+v (old key %s)", rot, oldKID)
		}
		var calls, refusals int
		kids := map[string]int{}
		end := time.Now().Add(2 * testActivationDelay)
		for time.Now().Before(end) {
			_, m := sts.agentMandate(t, base)
			kids[kidOf(t, m)]++
			for i, gw := range gws {
				resp, body := gw.call(t, clients[i], "/api/hello", m)
				calls++
				if resp.StatusCode != http.StatusOK {
					refusals++
					t.Errorf("gateway %d refused a mandate of key %s: %d %s", i+1, kidOf(t, m), resp.StatusCode, body)
				}
			}
		}
		t.Logf("%d calls, %d refusals; mandates by kid: %v", calls, refusals, kids)
		if kids[rot.KID] == 0 {
			t.Fatalf("no mandate was signed with the new key %s within 2x the activation delay: %v", rot.KID, kids)
		}
	})

	t.Run("an immediate rotation gets the old key refused at both gateways", func(t *testing.T) {
		_, m := sts.agentMandate(t, base)
		for i, gw := range gws {
			if resp, body := gw.call(t, clients[i], "/api/hello", m); resp.StatusCode != http.StatusOK {
				t.Fatalf("gateway %d before the rotation: %d %s", i+1, resp.StatusCode, body)
			}
		}
		rot := sts.rotate(t, "?immediate=true")
		if len(rot.Revoked) != 1 || rot.Revoked[0] != kidOf(t, m) {
			t.Fatalf("immediate rotation answered %+v, want %s revoked", rot, kidOf(t, m))
		}
		for i, gw := range gws {
			gw.awaitStatus(t, clients[i], "/api/hello", m, http.StatusUnauthorized)
		}
		// A new session is signed with the new key and passes.
		_, fresh := sts.agentMandate(t, base)
		if kidOf(t, fresh) != rot.KID {
			t.Fatalf("after the immediate rotation a mandate of %s, want %s", kidOf(t, fresh), rot.KID)
		}
		for i, gw := range gws {
			gw.awaitStatus(t, clients[i], "/api/hello", fresh, http.StatusOK)
		}
	})
}

// TestGatewayStartedBeforeItsSTS: a gateway whose STS is down logs why it cannot fetch
// the zone's keys and serves once the STS is up.
func TestGatewayStartedBeforeItsSTS(t *testing.T) {
	rs := newRedisStreams(t)
	t.Cleanup(func() { _ = rs.client.Del(context.Background(), rs.prefix+revocation.StreamKeys).Err() })
	rev := rs.revocation(rs.url)
	// Start the STS once for its address and its CA, then stop it.
	sts := start(t, splitSTS(postgresStorage(t), rev))
	base := sts.url("")
	sts.stop()

	gw := startStale(t, splitGateway(t, base, rootFile(sts), rev))
	client := gw.newClient(t, true, 2)
	testenv.WaitFor(t, "the gateway to log a failed key fetch", func() bool {
		// Requests make the gateway try; the revocation state is stale too (no relay
		// runs), so it answers 503 whatever the mandate.
		_, _, _ = gw.try(t, client, "/api/hello", "x.y.z")
		logs := gw.logs.String()
		return strings.Contains(logs, "fetching the zone key set failed") &&
			(strings.Contains(logs, `"cause":"refused"`) || strings.Contains(logs, `"cause": "refused"`))
	})

	sts.launch()
	up := time.Now()
	_, m := sts.agentMandate(t, base)
	gw.awaitStatus(t, client, "/api/hello", m, http.StatusOK)
	t.Logf("the gateway served %s after the STS answered TLS again", time.Since(up).Round(10*time.Millisecond))
	testenv.WaitFor(t, "the gateway to log its recovery", func() bool {
		return strings.Contains(gw.logs.String(), "zone key set fetched again")
	})
}

// TestImmediateRotationReachesTheOtherSTS: two STS processes serve one issuer from one
// database and one revocation stream. An immediate rotation made through the first is
// enforced by the second at once, through the caracal.keys entry, although the second
// would otherwise keep its cached keys for its refresh interval of ten minutes: a session
// mandate of the revoked key is refused at its token exchange, and the second signs
// with the new key.
func TestImmediateRotationReachesTheOtherSTS(t *testing.T) {
	rs := newRedisStreams(t)
	t.Cleanup(func() { _ = rs.client.Del(context.Background(), rs.prefix+revocation.StreamKeys).Err() })
	rev := rs.revocation(rs.url)
	storage := postgresStorage(t)
	a := start(t, splitSTS(storage, rev))
	base := a.url("")
	b := start(t, stsNode(base, storage, rev, "refresh_interval 10m"))

	session := a.session(t, "alpha", "agent", agentSecret)
	oldKID := kidOf(t, session)
	// The second STS loads the zone, its keys and its cached subject verification now.
	if m := b.mandate(t, "alpha", session, base+"/api", "read"); kidOf(t, m) != oldKID {
		t.Fatalf("the second STS signed with %s, want the zone's key %s", kidOf(t, m), oldKID)
	}
	rot := a.rotate(t, "?immediate=true")
	if len(rot.Revoked) != 1 || rot.Revoked[0] != oldKID {
		t.Fatalf("immediate rotation answered %+v, want %s revoked", rot, oldKID)
	}
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {session},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"resource":           {base + "/api"},
		"scope":              {"read"},
	}.Encode()
	var status int
	var body []byte
	testenv.WaitFor(t, "the second STS to refuse a session mandate of the revoked key", func() bool {
		resp, raw := b.postForm(t, "/zones/alpha/oauth2/token", form)
		status, body = resp.StatusCode, raw
		return status != http.StatusOK
	})
	if status != http.StatusBadRequest || !strings.Contains(string(body), "invalid_grant") {
		t.Fatalf("the revoked key's session mandate at the second STS: %d %s, want 400 invalid_grant", status, body)
	}
	if kid := kidOf(t, b.session(t, "alpha", "agent", agentSecret)); kid != rot.KID {
		t.Fatalf("the second STS signs with %s after the rotation, want %s", kid, rot.KID)
	}
	if !strings.Contains(b.logs.String(), "reloading the zone's keys") {
		t.Fatalf("the second STS did not log the key change:\n%s", b.logs)
	}
}
