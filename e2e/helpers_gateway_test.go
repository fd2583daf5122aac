package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

// Secrets of the gateway tests' configurations. They protect nothing but test data.
const (
	testKEK       = "0000000000000000000000000000000000000000000000000000000000000001"
	testStreamKey = "e2e-stream-key-0123456789"
	agentSecret   = "agent-secret-0001"
	readerSecret  = "reader-secret-0001"
	betaSecret    = "agent-secret-0002"
)

// gatewayConfig describes one caracal process of the gateway tests: an STS app with two
// zones, the gateway routes in front of the demo upstream (and of a test-owned upstream),
// and the revocation transport every module shares.
type gatewayConfig struct {
	// base is the STS's external URL; empty for the instance's own address. A second
	// process of a deployment uses the first one's, so that both sign and verify for
	// the same issuers.
	base string
	// storage holds the caracal_sts storage lines; "storage memory" when empty.
	storage string
	// revocation is the revocation option of the STS and of every gateway route:
	// "revocation local" when empty.
	revocation string
	// inheritRevocation leaves the revocation option out of the caracal_mandate blocks,
	// so that they use the STS's.
	inheritRevocation bool
	// sts adds options to the caracal_sts block.
	sts string
	// serveSTS puts the STS endpoints in the site.
	serveSTS bool
	// mandate adds options to every caracal_mandate block.
	mandate string
	// upstream is the test-owned upstream (host:port) behind the /echo, /ws, /exchange
	// and /fast routes; they are left out when it is empty.
	upstream string
}

// zones declares zone alpha (applications agent and reader, resources /api and /other)
// and zone beta, which uses the same resource identifier under its own issuer.
func zones(base string) string {
	return fmt.Sprintf(`zone alpha {
			application agent %[2]s
			application reader %[3]s
			resource %[1]s/api read write
			resource %[1]s/other read
			policy default
			grant agent %[1]s/api read write
			grant agent %[1]s/other read
			grant reader %[1]s/api read
		}
		zone beta {
			application agent %[4]s
			resource %[1]s/api read
			policy default
			grant agent %[1]s/api read
		}`, base, agentSecret, readerSecret, betaSecret)
}

// build returns the Caddyfile generator for start. The demo upstream gets a port of its
// own, reserved now.
func (c gatewayConfig) build(t testing.TB) func(port, admin int) string {
	demo := freePort(t)
	return func(port, admin int) string {
		base := c.base
		if base == "" {
			base = fmt.Sprintf("https://localhost:%d", port)
		}
		storage, rev := c.storage, c.revocation
		if storage == "" {
			storage = "storage memory"
		}
		if rev == "" {
			rev = "revocation local"
		}
		routeRev := rev
		if c.inheritRevocation {
			routeRev = ""
		}
		mandate := func(scopes, extra string) string {
			return fmt.Sprintf(`caracal_mandate {
			issuer %[1]s/zones/alpha
			resource %[1]s/api
			scopes %[2]s
			%[3]s
			%[4]s
			%[5]s
		}`, base, scopes, routeRev, c.mandate, extra)
		}
		proxy := func(to string) string {
			return fmt.Sprintf("reverse_proxy %s {\n\t\t\tflush_interval -1\n\t\t}", to)
		}
		demoAddr := fmt.Sprintf("127.0.0.1:%d", demo)
		var b strings.Builder
		fmt.Fprintf(&b, `{
	admin 127.0.0.1:%d
	default_bind 127.0.0.1
	skip_install_trust
	auto_https disable_redirects
	caracal_sts {
		base_url %s
		%s
		key_encryption_key %s
		%s
		%s
		%s
	}
}

https://localhost:%d {
	tls internal
`, admin, base, storage, testKEK, rev, c.sts, zones(base), port)
		if c.serveSTS {
			b.WriteString("\tcaracal_sts\n")
		}
		route := func(path, body string) {
			fmt.Fprintf(&b, "\thandle %s {\n\t\t%s\n\t}\n", path, body)
		}
		route("/api/*", mandate("read", "")+"\n\t\t"+proxy(demoAddr))
		route("/write/*", mandate("write", "")+"\n\t\t"+proxy(demoAddr))
		route("/noforward/*", mandate("read", "forward_mandate off")+"\n\t\t"+proxy(demoAddr))
		route("/whoami", mandate("read", "")+"\n\t\t"+`respond "{http.auth.user.id}|{http.auth.user.client_id}|{http.auth.user.zone_id}|{http.auth.user.scope}|{http.auth.user.sid}" 200`)
		route("/plain/*", proxy(demoAddr))
		if c.upstream != "" {
			route("/echo/*", mandate("read", "")+"\n\t\t"+proxy(c.upstream))
			route("/ws/*", mandate("read", "")+"\n\t\t"+proxy(c.upstream))
			route("/exchange/*", mandate("read", "exchange")+"\n\t\t"+proxy(c.upstream))
			route("/fast/*", mandate("read", "")+"\n\t\t"+proxy(c.upstream))
			route("/fast-plain/*", proxy(c.upstream))
		}
		// Any host: reverse_proxy passes the client's Host on.
		fmt.Fprintf(&b, "}\n\nhttp://:%d {\n\tcaracal_demo_upstream\n}\n", demo)
		return b.String()
	}
}

// startGateway starts a process with the configuration c describes.
func startGateway(t testing.TB, c gatewayConfig) *instance {
	t.Helper()
	return start(t, c.build(t))
}

// postgresStorage gives a test a database of its own and returns the storage lines.
func postgresStorage(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, drop, err := testenv.CreateDatabase(ctx, "e2e_gateway")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	return "storage postgres " + dsn
}

// redisStreams is a test's share of the Redis server: a stream prefix of its own,
// deleted at the end.
type redisStreams struct {
	url    string
	prefix string
	client *redis.Client
}

func newRedisStreams(t testing.TB) *redisStreams {
	t.Helper()
	raw := testenv.RequireRedis(t)
	opts, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	rs := &redisStreams{url: raw, prefix: "e2e-" + randomHex(t, 6) + ":", client: redis.NewClient(opts)}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rs.client.Del(ctx, rs.prefix+revocation.StreamSessionsRevoke, rs.prefix+revocation.StreamDelegationInvalidate).Err()
		_ = rs.client.Close()
	})
	return rs
}

// revocation is the revocation option pointing at url (the server itself, or a proxy
// in front of it) with the test's prefix and the shared stream key.
func (rs *redisStreams) revocation(url string) string {
	return fmt.Sprintf("revocation %s {\n\t\t\tstream_key %s\n\t\t\tstream_prefix %s\n\t\t}", url, testStreamKey, rs.prefix)
}

// via returns the Redis URL with its address replaced by addr (a proxy).
func (rs *redisStreams) via(t testing.TB, addr string) string {
	t.Helper()
	u, err := url.Parse(rs.url)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// revokedSessions lists the session ids of the revocation stream's entries.
func (rs *redisStreams) revokedSessions(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := rs.client.XRange(ctx, rs.prefix+revocation.StreamSessionsRevoke, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var sids []string
	for _, m := range msgs {
		if s, ok := m.Values["session_id"].(string); ok {
			sids = append(sids, s)
		}
	}
	return sids
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// upstream is a test-owned HTTP server on loopback: /echo answers with the identity
// headers it received, /fast with two bytes, and a request to switch to the "echo"
// protocol gets 101 and then its bytes echoed; how each tunnel ended goes to tunnels.
type upstream struct {
	srv     *httptest.Server
	tunnels chan error
}

func newUpstream(t testing.TB) *upstream {
	t.Helper()
	u := &upstream{tunnels: make(chan error, 16)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.EqualFold(r.Header.Get("Upgrade"), "echo"):
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				u.tunnels <- err
				return
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
				u.tunnels <- err
				return
			}
			_, err = io.Copy(conn, brw)
			u.tunnels <- err
		case strings.HasSuffix(r.URL.Path, "/echo"):
			seen := map[string]string{"authorization": r.Header.Get("Authorization")}
			for name, v := range r.Header {
				if strings.HasPrefix(name, "X-Caracal-") {
					seen[strings.ToLower(name)] = strings.Join(v, ",")
				}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(seen)
		case strings.HasSuffix(r.URL.Path, "/fast"):
			_, _ = io.WriteString(w, "ok")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

// rootPool is the instance's internal CA.
func (in *instance) rootPool(t testing.TB) *x509.CertPool {
	t.Helper()
	root, err := os.ReadFile(filepath.Join(in.dir, "data", "caddy", "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root) {
		t.Fatal("the instance's root certificate does not parse")
	}
	return pool
}

// tlsConfig trusts the instance's CA for the name localhost.
func (in *instance) tlsConfig(t testing.TB) *tls.Config {
	return &tls.Config{RootCAs: in.rootPool(t), ServerName: "localhost"}
}

// newClient speaks only HTTP/2 or only HTTP/1.1 (keeping up to conns idle connections)
// to the instance. It has no overall timeout, so streams can last: requests carry
// their own deadline.
func (in *instance) newClient(t testing.TB, h2 bool, conns int) *http.Client {
	t.Helper()
	var protocols http.Protocols
	if h2 {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
	}
	tr := &http.Transport{
		TLSClientConfig:     in.tlsConfig(t),
		Protocols:           &protocols,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", in.port))
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// call sends a GET with the mandate (none when token is empty) and extra header pairs,
// and reads the whole answer.
func (in *instance) call(t testing.TB, client *http.Client, path, token string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, in.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// try is call for polls: a response aborted on the way (a revocation arriving while it
// is sent cuts it, as it should) is an error, not a failure.
func (in *instance) try(t testing.TB, client *http.Client, path, token string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, in.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// awaitStatus polls path with the mandate until it answers status, and returns that
// answer.
func (in *instance) awaitStatus(t testing.TB, client *http.Client, path, token string, status int) (*http.Response, []byte) {
	t.Helper()
	var (
		resp *http.Response
		body []byte
		err  error
	)
	testenv.WaitFor(t, fmt.Sprintf("%s to answer %d", path, status), func() bool {
		resp, body, err = in.try(t, client, path, token)
		return err == nil && resp.StatusCode == status
	})
	return resp, body
}

// open starts a GET whose body the caller reads; ctx bounds it.
func (in *instance) open(t testing.TB, ctx context.Context, client *http.Client, path, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, in.url(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return resp
}

// session authenticates an application of a zone and returns its session mandate.
func (in *instance) session(t testing.TB, zone, client, secret string) string {
	t.Helper()
	resp, body := in.postForm(t, "/zones/"+zone+"/oauth2/token", "grant_type=client_credentials", client, secret)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("client_credentials for %s/%s: %d %s", zone, client, resp.StatusCode, body)
	}
	return accessToken(t, body)
}

// mandate exchanges a session mandate for a resource mandate.
func (in *instance) mandate(t testing.TB, zone, session, resource, scope string) string {
	t.Helper()
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {session},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"resource":           {resource},
	}
	if scope != "" {
		form.Set("scope", scope)
	}
	resp, body := in.postForm(t, "/zones/"+zone+"/oauth2/token", form.Encode())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exchange for %s: %d %s", resource, resp.StatusCode, body)
	}
	return accessToken(t, body)
}

// agentMandate is a fresh session of zone alpha's agent and its mandate for /api with
// the read scope.
func (in *instance) agentMandate(t testing.TB, base string) (session, mandate string) {
	t.Helper()
	session = in.session(t, "alpha", "agent", agentSecret)
	return session, in.mandate(t, "alpha", session, base+"/api", "read")
}

// accessToken reads the access_token of a token endpoint answer.
func accessToken(t testing.TB, body []byte) string {
	t.Helper()
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		t.Fatalf("no access token in %q", body)
	}
	return tr.AccessToken
}

// revoke is RFC 7009 at the STS: the application revokes its own session.
func (in *instance) revoke(t testing.TB, zone, session string) {
	t.Helper()
	resp, body := in.postForm(t, "/zones/"+zone+"/oauth2/revoke", url.Values{"token": {session}}.Encode())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
}

// claims decodes a mandate's payload (unverified: the test only reads what it was given).
type claims struct {
	Subject  string `json:"sub"`
	Audience string `json:"aud"`
	Use      string `json:"use"`
	SID      string `json:"sid"`
	Scope    string `json:"scope"`
	ClientID string `json:"client_id"`
	Zone     string `json:"zone_id"`
	Expiry   int64  `json:"exp"`
}

func claimsOf(t testing.TB, token string) claims {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// upgrade opens a TLS connection to the instance and asks path to switch to the echo
// protocol; it returns the connection once the 101 arrived.
func (in *instance) upgrade(t testing.TB, path, token string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", in.port), in.tlsConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(45 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: localhost:%d\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", path, in.port, token)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %d", resp.StatusCode)
	}
	return conn, br
}
