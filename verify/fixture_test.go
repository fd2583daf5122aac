package verify

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

const (
	testBase     = "https://sts.example"
	testZone     = "zone-a"
	otherZone    = "zone-b"
	testResource = "https://api.example/v1"
	testRealm    = "example-api"
)

var (
	testIssuer  = mandate.IssuerURL(testBase, testZone)
	otherIssuer = mandate.IssuerURL(testBase, otherZone)
)

// newFakeClock is a settable clock shared by the signer's claims, the verifier, the
// revocation store and the response guard, so that expiry is decided by the test and
// not by the machine.
func newFakeClock() *testenv.Clock {
	return testenv.NewClock(time.Unix(1_800_000_000, 0))
}

// fixture is one zone: its key, a signer, the verifier's key set, a revocation store and
// an epoch tracker, all on one fake clock.
type fixture struct {
	clock  *testenv.Clock
	key    *ecdsa.PrivateKey
	signer *mandate.Signer
	keys   mandate.KeySet
	store  *revocation.RevokedSet
	epochs *revocation.Epochs
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	clock := newFakeClock()
	key, signer := newSigner(tb)
	return &fixture{
		clock:  clock,
		key:    key,
		signer: signer,
		keys:   mandate.KeySet{signer.KID(): &key.PublicKey},
		store:  revocation.NewRevokedSet(clock.Now),
		epochs: new(revocation.Epochs),
	}
}

func newSigner(tb testing.TB) (*ecdsa.PrivateKey, *mandate.Signer) {
	tb.Helper()
	key, err := mandate.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := mandate.NewSigner(key)
	if err != nil {
		tb.Fatal(err)
	}
	return key, s
}

// options returns verifier options for the fixture's zone and testResource, requiring
// the read scope.
func (f *fixture) options() Options {
	return Options{
		Issuer:      testIssuer,
		Resource:    testResource,
		Scopes:      []string{"read"},
		Keys:        f.keys,
		Revocations: f.store,
		Epochs:      f.epochs,
		Realm:       testRealm,
		Now:         f.clock.Now,
	}
}

func (f *fixture) verifier(tb testing.TB, change func(*Options)) *Verifier {
	tb.Helper()
	opts := f.options()
	if change != nil {
		change(&opts)
	}
	v, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// resourceClaims are the claims of a direct (undelegated) resource mandate for
// testResource with the read and write scopes, valid for five minutes.
func (f *fixture) resourceClaims() *mandate.Claims {
	now := f.clock.Now().Unix()
	return &mandate.Claims{
		Issuer: testIssuer, Subject: "agent-1", Audience: testResource,
		Expiry: now + 300, IssuedAt: now, NotBefore: now, ID: "jti-1",
		ZoneID: testZone, ClientID: "agent-1", SID: "sid-1", RootSID: "sid-1",
		Use: mandate.UseResource, Scope: "read write",
	}
}

// delegatedClaims are the claims of a mandate obtained by session sid-3 two hops down a
// delegation path edge-1 -> edge-2 rooted at session sid-1, issued at epoch 5.
func (f *fixture) delegatedClaims() *mandate.Claims {
	c := f.resourceClaims()
	c.ClientID, c.SID, c.RootSID = "agent-3", "sid-3", "sid-1"
	c.Act = &mandate.Actor{Sub: "agent-3", Act: &mandate.Actor{Sub: "agent-2"}}
	c.DelegationEdgeID, c.DelegationPath, c.HopCount, c.DelegationGraphEpoch = "edge-2", []string{"edge-1", "edge-2"}, 2, 5
	return c
}

func (f *fixture) sign(tb testing.TB, c *mandate.Claims) string {
	tb.Helper()
	return signWith(tb, f.signer, mandate.TypResource, c)
}

func signWith(tb testing.TB, s *mandate.Signer, typ string, c *mandate.Claims) string {
	tb.Helper()
	tok, err := s.Sign(typ, c)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// token signs the fixture's resource claims after applying change.
func (f *fixture) token(tb testing.TB, change func(*mandate.Claims)) string {
	tb.Helper()
	c := f.resourceClaims()
	if change != nil {
		change(c)
	}
	return f.sign(tb, c)
}

// revokeSession and revokeEdge put an anchor of zone into the revocation set, the way a
// stream entry would.
func (f *fixture) revokeSession(zone, sid string) {
	now := f.clock.Now()
	f.store.Add(revocation.Event{ZoneID: zone, SessionID: sid, Reason: "test", RevokedAt: now, ExpiresAt: now.Add(time.Hour)})
}

func (f *fixture) revokeEdge(zone, edge string) {
	now := f.clock.Now()
	f.store.Add(revocation.Event{ZoneID: zone, DelegationEdgeID: edge, Reason: "test", RevokedAt: now, ExpiresAt: now.Add(time.Hour)})
}

// rawToken assembles a compact JWS from a header and claims of the test's choosing,
// signed by sign over the signing input (an empty signature when sign is nil), for
// tokens no Signer would produce.
func rawToken(tb testing.TB, header map[string]any, claims any, sign func(input []byte) []byte) string {
	tb.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		tb.Fatal(err)
	}
	p, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + enc.EncodeToString(sig)
}

// watermarkSource is a revocation.Source whose watermark (and counters) the test sets;
// it stands for a consumer cut off from its publishers.
type watermarkSource struct {
	mu        sync.Mutex
	watermark time.Time
	stats     revocation.Stats
}

func newWatermarkSource() *watermarkSource {
	return &watermarkSource{stats: revocation.Stats{Synced: true}}
}

func (s *watermarkSource) set(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watermark = t
}

func (s *watermarkSource) setStats(st revocation.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = st
}

func (s *watermarkSource) Watermark() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watermark
}

func (s *watermarkSource) Stats() revocation.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *watermarkSource) Lag() time.Duration { return 0 }
func (s *watermarkSource) Close() error       { return nil }

// keyServer stands in for the STS of testZone on 127.0.0.1: RFC 8414 metadata and the
// zone's JWKS, with keys the test can change and a status it can break.
type keyServer struct {
	srv    *httptest.Server
	issuer string

	mu         sync.Mutex
	keys       []*ecdsa.PublicKey
	jwksStatus int
	jwksHits   int
}

func newKeyServer(tb testing.TB, keys ...*ecdsa.PublicKey) *keyServer {
	tb.Helper()
	ks := &keyServer{keys: keys, jwksStatus: http.StatusOK}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server/zones/"+testZone, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"issuer":   ks.issuer,
			"jwks_uri": ks.issuer + "/jwks.json",
		})
	})
	mux.HandleFunc("GET /zones/"+testZone+"/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		ks.mu.Lock()
		defer ks.mu.Unlock()
		ks.jwksHits++
		if ks.jwksStatus != http.StatusOK {
			http.Error(w, "unavailable", ks.jwksStatus)
			return
		}
		var doc mandate.JWKS
		for _, k := range ks.keys {
			jwk, err := mandate.PublicJWK(k)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			doc.Keys = append(doc.Keys, jwk)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_ = json.NewEncoder(w).Encode(doc)
	})
	ks.srv = httptest.NewServer(mux)
	tb.Cleanup(ks.srv.Close)
	ks.issuer = ks.srv.URL + "/zones/" + testZone
	return ks
}

func (ks *keyServer) setKeys(keys ...*ecdsa.PublicKey) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.keys = keys
}

func (ks *keyServer) setStatus(status int) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.jwksStatus = status
}

func (ks *keyServer) hits() int {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.jwksHits
}

// parseChallenge splits a `Bearer k="v", k="v"` challenge into its attributes, failing
// the test when the value does not have exactly that shape.
func parseChallenge(tb testing.TB, value string) map[string]string {
	tb.Helper()
	rest, ok := strings.CutPrefix(value, "Bearer ")
	if !ok {
		tb.Fatalf("challenge %q does not start with the Bearer scheme", value)
	}
	attrs := map[string]string{}
	for rest != "" {
		name, after, ok := strings.Cut(rest, `="`)
		if !ok {
			tb.Fatalf("challenge %q: attribute without a quoted value", value)
		}
		val, after, ok := strings.Cut(after, `"`)
		if !ok {
			tb.Fatalf("challenge %q: unterminated quoted value", value)
		}
		if _, dup := attrs[name]; dup {
			tb.Fatalf("challenge %q repeats %s", value, name)
		}
		attrs[name] = val
		if after != "" {
			if after, ok = strings.CutPrefix(after, ", "); !ok || after == "" {
				tb.Fatalf("challenge %q: attributes are not separated by a comma", value)
			}
		}
		rest = after
	}
	return attrs
}
