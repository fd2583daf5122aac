package mandate

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock shared by a test and the code under test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rawSign builds a compact JWS from literal header and payload JSON, signed with ES256 by priv.
// Tests use it to craft tokens the Signer would never produce.
func rawSign(t testing.TB, priv *ecdsa.PrivateKey, header, payload string) string {
	t.Helper()
	input := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// genuinelySigned checks a token's ES256 signature with crypto/ecdsa alone, independent of the
// verifier under test.
func genuinelySigned(pub *ecdsa.PublicKey, token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return false
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	return ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}

func TestScopes(t *testing.T) {
	c := &Claims{Scope: " read  write\tadmin "}
	if got := c.Scopes(); !slices.Equal(got, []string{"read", "write", "admin"}) {
		t.Fatalf("Scopes() = %q", got)
	}
	if got := (&Claims{}).Scopes(); len(got) != 0 {
		t.Fatalf("Scopes() of no scope = %q", got)
	}
}

func TestHasScopes(t *testing.T) {
	c := &Claims{Scope: "read write"}
	tests := []struct {
		name     string
		required []string
		want     bool
	}{
		{"no required scope is satisfied", nil, true},
		{"one granted scope is satisfied", []string{"read"}, true},
		{"all granted scopes are satisfied", []string{"write", "read"}, true},
		{"a missing scope is not satisfied", []string{"read", "admin"}, false},
		{"a prefix of a granted scope is not that scope", []string{"rea"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.HasScopes(tt.required...); got != tt.want {
				t.Fatalf("HasScopes(%q) = %v, want %v", tt.required, got, tt.want)
			}
		})
	}
}

func TestAnchors(t *testing.T) {
	tests := []struct {
		name string
		c    Claims
		want []string
	}{
		{"a session mandate has its sid once", Claims{SID: "s1", RootSID: "s1"}, []string{"s1"}},
		{
			"a delegated mandate has every session and edge",
			Claims{SID: "s2", RootSID: "s1", DelegationEdgeID: "e2", DelegationPath: []string{"e1", "e2"}},
			[]string{"s2", "s1", "e2", "e1"},
		},
		{"empty ids are dropped", Claims{SID: "s1", DelegationPath: []string{"", "e1"}}, []string{"s1", "e1"}},
		{"no ids give no anchors", Claims{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Anchors(); !slices.Equal(got, tt.want) {
				t.Fatalf("Anchors() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestIssuerURL(t *testing.T) {
	for base, want := range map[string]string{
		"https://sts.example":    "https://sts.example/zones/z1",
		"https://sts.example/":   "https://sts.example/zones/z1",
		"https://sts.example/a/": "https://sts.example/a/zones/z1",
	} {
		if got := IssuerURL(base, "z1"); got != want {
			t.Errorf("IssuerURL(%q) = %q, want %q", base, got, want)
		}
	}
}

func TestClaimsJSONNames(t *testing.T) {
	c := Claims{
		Issuer: "i", Subject: "s", Audience: "a", Expiry: 3, IssuedAt: 1, NotBefore: 2, ID: "j",
		ZoneID: "z", ClientID: "c", SID: "sid", RootSID: "root", Use: UseResource, Scope: "read",
		Act: &Actor{Sub: "b", Act: &Actor{Sub: "a"}}, DelegationEdgeID: "e", DelegationPath: []string{"e"},
		HopCount: 1, DelegationGraphEpoch: 7,
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"iss":"i","sub":"s","aud":"a","exp":3,"iat":1,"nbf":2,"jti":"j","zone_id":"z","client_id":"c",` +
		`"sid":"sid","root_sid":"root","use":"resource","scope":"read","act":{"sub":"b","act":{"sub":"a"}},` +
		`"delegation_edge_id":"e","delegation_path":["e"],"hop_count":1,"delegation_graph_epoch":7}`
	if string(b) != want {
		t.Fatalf("claims JSON\n got %s\nwant %s", b, want)
	}
	b, err = json.Marshal(Claims{Use: UseSession})
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"scope", "act", "delegation_edge_id", "delegation_path", "hop_count", "delegation_graph_epoch"} {
		if strings.Contains(string(b), `"`+absent+`"`) {
			t.Errorf("session claims carry %q: %s", absent, b)
		}
	}
}
