package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

// The fault tests hold every process to one rule: a revoked mandate is never answered
// 200 more than max_staleness after its revoke was acknowledged, whatever the fault;
// and once the fault ends, unrevoked mandates are served again.

// faultStaleness is the max_staleness of the gateways under test: short, so that the
// tests run quickly, and well above the heartbeat interval.
const faultStaleness = 3 * time.Second

// gatewayOnly returns the Caddyfile of a process with no STS: one caracal_mandate route
// for zone alpha's /api of the STS at base, keys fetched from base over HTTPS. rev is
// the route's revocation line (none when empty).
func gatewayOnly(t testing.TB, base, rev string) func(port, admin int) string {
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
			max_staleness %[5]s
			%[4]s
		}
		reverse_proxy 127.0.0.1:%[6]d {
			flush_interval -1
		}
	}
}

http://:%[6]d {
	caracal_demo_upstream
}
`, port, admin, base, rev, faultStaleness, demo)
	}
}

// trusting is the environment that makes a process trust in's internal CA, so that a
// gateway-only process can fetch the STS's keys over HTTPS.
func trusting(in *instance) string {
	return "SSL_CERT_FILE=" + filepath.Join(in.dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
}

// revokedWatch polls a gateway with a revoked mandate until it refuses it as revoked,
// and records every 200 it got later than the revoke's acknowledgement plus the bound.
type revokedWatch struct {
	done chan struct{}

	mu       sync.Mutex
	late     []string // 200s past the bound, with their time after the ack
	statuses map[int]int
}

func watchRevoked(t *testing.T, in *instance, client *http.Client, mandate string, ackAt time.Time, bound time.Duration) *revokedWatch {
	t.Helper()
	w := &revokedWatch{done: make(chan struct{}), statuses: map[int]int{}}
	go func() {
		defer close(w.done)
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			resp, _, err := in.try(t, client, "/api/hello", mandate)
			if err == nil {
				at := time.Since(ackAt)
				w.mu.Lock()
				w.statuses[resp.StatusCode]++
				if resp.StatusCode == http.StatusOK && at > bound {
					w.late = append(w.late, at.Round(time.Millisecond).String())
				}
				w.mu.Unlock()
				if resp.StatusCode == http.StatusUnauthorized && strings.Contains(resp.Header.Get("WWW-Authenticate"), "revoked") {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return w
}

// wait waits for the watch to see the refusal and fails the test on any late 200.
func (w *revokedWatch) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(120 * time.Second):
		t.Fatalf("%s: the watch did not end", what)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.late) > 0 {
		t.Fatalf("%s: the revoked mandate was admitted %d times past max_staleness (at %v after the ack); statuses %v", what, len(w.late), w.late, w.statuses)
	}
	if w.statuses[http.StatusUnauthorized] == 0 {
		t.Fatalf("%s: the revoked mandate was never refused as revoked; statuses %v", what, w.statuses)
	}
}

// revokeAcked revokes a session at in (RFC 7009) and returns when the 200 came back.
func revokeAcked(t *testing.T, in *instance, session string) time.Time {
	t.Helper()
	in.revoke(t, "alpha", session)
	return time.Now()
}

// TestFaultRedisOutage: revocations acknowledged while Redis is out of reach are
// enforced by the other process once it is back, and the gateway refuses (503) rather
// than admit them in between.
func TestFaultRedisOutage(t *testing.T) {
	rs := newRedisStreams(t)
	redisURL, err := url.Parse(rs.url)
	if err != nil {
		t.Fatal(err)
	}
	storage := postgresStorage(t)
	proxy := testenv.NewProxy(t, redisURL.Host)
	rev := rs.revocation(rs.via(t, proxy.Addr()))
	a := startGateway(t, gatewayConfig{serveSTS: true, storage: storage, revocation: rev})
	base := a.url("")
	b := start(t, gatewayOnly(t, base, rev), trusting(a))
	cb := b.newClient(t, true, 4)

	s1, m1 := a.agentMandate(t, base)
	_, m2 := a.agentMandate(t, base)
	b.awaitStatus(t, cb, "/api/hello", m1, http.StatusOK)

	proxy.Cut(true)
	ack := revokeAcked(t, a, s1)
	watch := watchRevoked(t, b, cb, m1, ack, faultStaleness)
	// While Redis is away, B goes stale and says so.
	resp, body := b.awaitStatus(t, cb, "/api/hello", m2, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("stale answer without Retry-After: %v %s", resp.Header, body)
	}
	proxy.Cut(false)
	watch.wait(t, "outage")
	b.awaitStatus(t, cb, "/api/hello", m2, http.StatusOK)
}

// TestFaultRedisLosesItsData: Redis restarts empty. A gateway started afterwards
// refuses every mandate revoked before (503 while stale, then 401), never 200, because
// the STS republishes the live revocations from storage before its heartbeats resume.
func TestFaultRedisLosesItsData(t *testing.T) {
	srv := testenv.StartRedisServer(t)
	rev := fmt.Sprintf("revocation %s {\n\t\t\tstream_key %s\n\t\t}", srv.URL(), testStreamKey)
	storage := postgresStorage(t)
	a := startGateway(t, gatewayConfig{serveSTS: true, storage: storage, revocation: rev})
	base := a.url("")
	ca := a.newClient(t, true, 4)

	var revoked []string
	var ack time.Time
	for range 5 {
		s, m := a.agentMandate(t, base)
		ack = revokeAcked(t, a, s)
		revoked = append(revoked, m)
	}
	for _, m := range revoked {
		a.awaitStatus(t, ca, "/api/hello", m, http.StatusUnauthorized)
	}
	srv.Restart()

	c := startStale(t, gatewayOnly(t, base, rev), trusting(a))
	cc := c.newClient(t, true, 4)
	// The acknowledgements are long past: any 200 is a late one.
	var watches []*revokedWatch
	for _, m := range revoked {
		watches = append(watches, watchRevoked(t, c, cc, m, ack, 0))
	}
	for i, w := range watches {
		w.wait(t, fmt.Sprintf("revoked mandate %d on the gateway started after the data loss", i))
	}
	_, fresh := a.agentMandate(t, base)
	c.awaitStatus(t, cc, "/api/hello", fresh, http.StatusOK)
}

// TestFaultWrongStreamKey: a gateway whose stream key differs from the publisher's
// hears no valid heartbeat, so it never calls itself fresh, and says why in its log.
func TestFaultWrongStreamKey(t *testing.T) {
	rs := newRedisStreams(t)
	a := startGateway(t, gatewayConfig{serveSTS: true, storage: postgresStorage(t), revocation: rs.revocation(rs.url)})
	base := a.url("")
	wrong := strings.Replace(rs.revocation(rs.url), testStreamKey, "a-different-stream-key-0000", 1)
	b := startStale(t, gatewayOnly(t, base, wrong), trusting(a))
	cb := b.newClient(t, true, 2)

	s, m := a.agentMandate(t, base)
	resp, body := b.awaitStatus(t, cb, "/api/hello", m, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("stale answer without Retry-After: %v %s", resp.Header, body)
	}
	ack := revokeAcked(t, a, s)
	// Nothing ends this fault, so watch for max_staleness and a little more by hand.
	deadline := ack.Add(faultStaleness + 2*time.Second)
	for time.Now().Before(deadline) {
		if resp, _, err := b.try(t, cb, "/api/hello", m); err == nil && resp.StatusCode == http.StatusOK {
			t.Fatalf("the gateway with the wrong key admitted a revoked mandate %s after the ack", time.Since(ack))
		}
		time.Sleep(50 * time.Millisecond)
	}
	testenv.WaitFor(t, "a log line naming the stream key", func() bool {
		return strings.Contains(b.logs.String(), "stream_key")
	})
}

// TestFaultGatewayTransport: a gateway-only process on the local transport has no
// publisher and refuses (503) instead of calling itself fresh; a gateway without a
// revocation line in a process whose STS publishes to Redis uses the STS's transport.
func TestFaultGatewayTransport(t *testing.T) {
	rs := newRedisStreams(t)
	storage := postgresStorage(t)
	a := startGateway(t, gatewayConfig{serveSTS: true, storage: storage, revocation: rs.revocation(rs.url)})
	base := a.url("")

	t.Run("local transport without a publisher", func(t *testing.T) {
		b := startStale(t, gatewayOnly(t, base, "revocation local"), trusting(a))
		cb := b.newClient(t, true, 2)
		_, m := a.agentMandate(t, base)
		resp, body := b.awaitStatus(t, cb, "/api/hello", m, http.StatusServiceUnavailable)
		if resp.Header.Get("Retry-After") == "" {
			t.Fatalf("stale answer without Retry-After: %v %s", resp.Header, body)
		}
	})

	t.Run("a gateway without a revocation line uses the STS's transport", func(t *testing.T) {
		// Same storage and keys as A; its caracal_mandate blocks name no transport.
		c := startGateway(t, gatewayConfig{base: base, storage: storage, revocation: rs.revocation(rs.url), inheritRevocation: true, mandate: "max_staleness " + faultStaleness.String()})
		cc := c.newClient(t, true, 2)
		s, m := a.agentMandate(t, base)
		c.awaitStatus(t, cc, "/api/hello", m, http.StatusOK)
		ack := revokeAcked(t, a, s)
		watchRevoked(t, c, cc, m, ack, faultStaleness).wait(t, "inherited transport")
	})
}

// TestFaultStartWithRedisDown: a process starts while Redis is unreachable, answers
// 503, and serves once Redis is back; caracal validate returns promptly.
func TestFaultStartWithRedisDown(t *testing.T) {
	rs := newRedisStreams(t)
	redisURL, err := url.Parse(rs.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, redisURL.Host)
	proxy.Cut(true)
	rev := rs.revocation(rs.via(t, proxy.Addr()))
	cfg := gatewayConfig{serveSTS: true, storage: postgresStorage(t), revocation: rev}

	t.Run("validate", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(cfg.build(t)(freePort(t), freePort(t))), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, binary, "validate", "--config", path, "--adapter", "caddyfile").CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("caracal validate hung with Redis unreachable:\n%s", out)
		}
		if err != nil {
			t.Fatalf("caracal validate: %v\n%s", err, out)
		}
	})

	a := startStale(t, cfg.build(t))
	base := a.url("")
	ca := a.newClient(t, true, 2)
	_, m := a.agentMandate(t, base)
	resp, body := a.awaitStatus(t, ca, "/api/hello", m, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatalf("stale answer without Retry-After: %v %s", resp.Header, body)
	}
	proxy.Cut(false)
	a.awaitStatus(t, ca, "/api/hello", m, http.StatusOK)
}

// TestFaultTwoRelaysPublishOnce: two STS processes relay one outbox; every revocation
// reaches the stream once.
func TestFaultTwoRelaysPublishOnce(t *testing.T) {
	rs := newRedisStreams(t)
	storage := postgresStorage(t)
	a := startGateway(t, gatewayConfig{serveSTS: true, storage: storage, revocation: rs.revocation(rs.url)})
	base := a.url("")
	startGateway(t, gatewayConfig{base: base, storage: storage, revocation: rs.revocation(rs.url)})
	ca := a.newClient(t, true, 2)

	var sids []string
	var last string
	for range 30 {
		s, m := a.agentMandate(t, base)
		a.revoke(t, "alpha", s)
		sids = append(sids, claimsOf(t, m).SID)
		last = m
	}
	a.awaitStatus(t, ca, "/api/hello", last, http.StatusUnauthorized)
	// Give the second relay a few of its polls to publish a duplicate, if it would.
	time.Sleep(3 * revocation.DefaultHeartbeatInterval)
	count := map[string]int{}
	for _, sid := range rs.revokedSessions(t) {
		count[sid]++
	}
	for _, sid := range sids {
		if count[sid] != 1 {
			t.Errorf("session %s is on the stream %d times", sid, count[sid])
		}
	}
}

// TestFaultAdminRevokeIsEnforcedInItsOwnProcess: right after the admin API's 200 for a
// session revoke, the same process refuses both a new exchange for the session and the
// session's existing mandate.
func TestFaultAdminRevokeIsEnforcedInItsOwnProcess(t *testing.T) {
	in := start(t, coordinatorCaddyfile(t, postgresStorage(t), ""))
	base := in.url("")
	client := in.newClient(t, true, 2)
	for i := range 20 {
		session := in.session(t, "demo", "orchestrator", "orchestrator-secret")
		m := in.mandate(t, "demo", session, base+"/api", "read")
		sid := claimsOf(t, session).SID
		if code := in.adminCall(t, http.MethodPost, "/v1/zones/demo/sessions/"+sid+"/revoke", adminToken, map[string]any{"reason": "test"}, nil); code != http.StatusOK {
			t.Fatalf("admin revoke %d: %d", i, code)
		}
		form := url.Values{
			"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":      {session},
			"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
			"resource":           {base + "/api"},
		}
		if resp, body := in.postForm(t, "/zones/demo/oauth2/token", form.Encode()); resp.StatusCode == http.StatusOK {
			t.Fatalf("revoke %d: the STS issued a mandate for the revoked session: %s", i, body)
		}
		if resp, body := in.call(t, client, "/api/hello", m); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("revoke %d: the gateway answered %d for the revoked session's mandate: %s", i, resp.StatusCode, body)
		}
	}
}
