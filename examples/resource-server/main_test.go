package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

const (
	testZone     = "demo"
	testResource = "https://api.example/hello"
)

// zone is an STS stand-in: a TLS server on 127.0.0.1 publishing RFC 8414 metadata and the
// JWKS of one zone key, the file holding its certificate, and a signer of that key.
type zone struct {
	issuer string
	caFile string
	signer *mandate.Signer
}

func newZone(t *testing.T) *zone {
	t.Helper()
	key, err := mandate.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := mandate.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	z := &zone{signer: signer}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server/zones/"+testZone, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": z.issuer, "jwks_uri": z.issuer + "/jwks.json"})
	})
	mux.HandleFunc("GET /zones/"+testZone+"/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		jwk, err := mandate.PublicJWK(&key.PublicKey)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(mandate.JWKS{Keys: []mandate.JWK{jwk}})
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	z.issuer = srv.URL + "/zones/" + testZone
	z.caFile = filepath.Join(t.TempDir(), "root.crt")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(z.caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return z
}

// mandate returns a resource mandate of the zone for testResource with the given scope.
func (z *zone) mandate(t *testing.T, sid, scope string) string {
	t.Helper()
	now := time.Now().Unix()
	tok, err := z.signer.Sign(mandate.TypResource, &mandate.Claims{
		Issuer: z.issuer, Subject: "demo-agent", Audience: testResource,
		Expiry: now + 300, IssuedAt: now, NotBefore: now, ID: "jti-" + sid,
		ZoneID: testZone, ClientID: "demo-agent", SID: sid, RootSID: sid,
		Use: mandate.UseResource, Scope: scope,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (z *zone) config() config {
	return config{issuer: z.issuer, resource: testResource, scopes: "read", ca: z.caFile}
}

func startHandler(t *testing.T, c config) http.Handler {
	t.Helper()
	h, closeFeed, err := newHandler(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFeed)
	return h
}

// statusAborted is the status get reports for a response that the guard broke off after
// its headers were sent (the handler panicked with http.ErrAbortHandler, which a real
// server turns into a reset connection). It is not an HTTP status, so no check for 200,
// 401 or 503 mistakes it for one.
const statusAborted = -1

// get serves one GET request to h. A revocation that lands while the response is being
// written aborts it; get reports that as statusAborted instead of letting the panic end
// the test, because polling for a revocation races with it by design.
func get(h http.Handler, path, token string) (rec *httptest.ResponseRecorder) {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	rec = httptest.NewRecorder()
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			rec.Code = statusAborted
		}
	}()
	h.ServeHTTP(rec, r)
	return rec
}

func TestHelloAnswersOnlyAValidMandate(t *testing.T) {
	z := newZone(t)
	h := startHandler(t, z.config())

	t.Run("a valid mandate gets the caller's identity", func(t *testing.T) {
		rec := get(h, "/hello", z.mandate(t, "sid-1", "read write"))
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var got map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"sub": "demo-agent", "client_id": "demo-agent", "scope": "read write"}
		if len(got) != len(want) || got["sub"] != want["sub"] || got["client_id"] != want["client_id"] || got["scope"] != want["scope"] {
			t.Fatalf("body %v, want %v", got, want)
		}
	})
	t.Run("a request without a mandate gets 401 and a challenge", func(t *testing.T) {
		rec := get(h, "/hello", "")
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", rec.Code)
		}
		if c := rec.Header().Get("WWW-Authenticate"); c != `Bearer realm="`+testResource+`"` {
			t.Fatalf("challenge %q", c)
		}
	})
	t.Run("a mandate without the required scope gets 403", func(t *testing.T) {
		rec := get(h, "/hello", z.mandate(t, "sid-1", "write"))
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Header().Get("WWW-Authenticate"), `scope="read"`) {
			t.Fatalf("status %d, challenge %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
}

func TestStartupNeedsTheIssuersCA(t *testing.T) {
	z := newZone(t)
	c := z.config()
	c.ca = ""
	if _, _, err := newHandler(t.Context(), c); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without -ca: %v, want a certificate error", err)
	}
	c.ca = filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(c.ca, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := newHandler(t.Context(), c); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("with a CA file holding no certificate: %v", err)
	}
}

// redisFeed is the example configured with the Redis revocation streams of a test prefix
// of its own, and a publisher on them.
type redisFeed struct {
	zone      *zone
	config    config
	pub       revocation.Publisher
	streamKey string
	unique    string
}

func newRedisFeed(t *testing.T) *redisFeed {
	t.Helper()
	opts, err := redis.ParseURL(testenv.RequireRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	random := make([]byte, 8)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	unique := hex.EncodeToString(random)
	prefix := "caracal-test:example:" + unique + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rdb.Del(ctx, prefix+revocation.StreamSessionsRevoke, prefix+revocation.StreamDelegationInvalidate)
	})
	z := newZone(t)
	c := z.config()
	c.redisURL, c.streamKey, c.streamPrefix = testenv.RedisURL(), "example stream key "+unique, prefix
	return &redisFeed{zone: z, config: c, streamKey: c.streamKey, unique: unique,
		pub: revocation.NewRedisPublisher(revocation.RedisOptions{Client: rdb, StreamPrefix: prefix})}
}

// heartbeat publishes the heartbeat an STS's outbox relay would send.
func (rf *redisFeed) heartbeat(t *testing.T) {
	t.Helper()
	now := time.Now()
	hb := revocation.Heartbeat{Publisher: "test-relay", Watermark: now, SentAt: now}
	if err := rf.pub.Publish(t.Context(), revocation.StreamSessionsRevoke, hb.SignedFields([]byte(rf.streamKey))); err != nil {
		t.Fatal(err)
	}
}

// revoke publishes the revocation of session sid, signed with key.
func (rf *redisFeed) revoke(t *testing.T, sid, key string) {
	t.Helper()
	now := time.Now()
	fields := revocation.Event{ZoneID: testZone, SessionID: sid, Reason: "test", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}.Fields()
	fields["sig"] = revocation.Sign([]byte(key), revocation.StreamSessionsRevoke, fields)
	if err := rf.pub.Publish(t.Context(), revocation.StreamSessionsRevoke, fields); err != nil {
		t.Fatal(err)
	}
}

// TestRevocationsArriveFromRedis runs the example with the Redis revocation streams: a
// session revoked by a signed entry on the stream stops passing without a restart, and an
// entry signed with another key changes nothing.
func TestRevocationsArriveFromRedis(t *testing.T) {
	rf := newRedisFeed(t)
	z, unique, streamKey := rf.zone, rf.unique, rf.streamKey
	h := startHandler(t, rf.config)
	revoked, spared := "sid-r-"+unique, "sid-s-"+unique
	revokedToken, sparedToken := z.mandate(t, revoked, "read"), z.mandate(t, spared, "read")
	// No publisher has vouched for the state yet: refused, not passed.
	if rec := get(h, "/hello", sparedToken); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("before any heartbeat: status %d: %s", rec.Code, rec.Body)
	}
	rf.heartbeat(t)
	testenv.WaitFor(t, "the heartbeat to make the state current", func() bool { return get(h, "/hello", sparedToken).Code != http.StatusServiceUnavailable })
	for _, tok := range []string{revokedToken, sparedToken} {
		if rec := get(h, "/hello", tok); rec.Code != http.StatusOK {
			t.Fatalf("before any revocation: status %d: %s", rec.Code, rec.Body)
		}
	}

	rf.revoke(t, spared, "a key this deployment does not use")
	rf.revoke(t, revoked, streamKey)
	// The consumer applies entries in stream order as soon as its blocking read returns;
	// the deadline only turns a lost entry into a failure.
	deadline := time.Now().Add(10 * time.Second)
	for get(h, "/hello", revokedToken).Code != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the revoked session still passes 10s after its stream entry")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The forged entry came first, so it has been read by now: it must have been dropped.
	if rec := get(h, "/hello", sparedToken); rec.Code != http.StatusOK {
		t.Fatalf("an entry signed with another key revoked a session: status %d", rec.Code)
	}
}

// TestEventStreamEndsOnRevocation: the guard the example puts on its responses breaks off
// an event stream whose session is revoked on the Redis stream, between two events,
// without waiting for the next one.
func TestEventStreamEndsOnRevocation(t *testing.T) {
	rf := newRedisFeed(t)
	srv := httptest.NewServer(startHandler(t, rf.config))
	t.Cleanup(srv.Close)
	rf.heartbeat(t)
	sid := "sid-e-" + rf.unique
	tok := rf.zone.mandate(t, sid, "read")
	var resp *http.Response
	testenv.WaitFor(t, "the heartbeat to make the state current", func() bool {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		r, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode != http.StatusOK {
			r.Body.Close()
			return false
		}
		resp = r
		return true
	})
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "event: tick\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	rf.revoke(t, sid, rf.streamKey)
	_, err := testenv.BodyEnd(t, br)
	testenv.AssertAborted(t, err, false)
}
