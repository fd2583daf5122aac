package mandate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	josejson "github.com/go-jose/go-jose/v4/json"
)

// fuzzNow is the fixed clock of the fuzz targets, so that the committed seed tokens stay valid.
const fuzzNow = 1_800_000_000

// fuzzKey is a fixed zone key: the committed seeds are genuinely signed by it.
func fuzzKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	scalar := sha256.Sum256([]byte("caracal mandate fuzz key"))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func fuzzClaims(use, aud string) *Claims {
	return &Claims{
		Issuer: testIssuer, Subject: "agent-1", Audience: aud,
		Expiry: fuzzNow + 3600, IssuedAt: fuzzNow, NotBefore: fuzzNow, ID: "jti-1",
		ZoneID: testZone, ClientID: "agent-1", SID: "sid-1", RootSID: "sid-0", Use: use,
	}
}

// FuzzVerify: no input panics, every rejection is a *Error, and nothing verifies unless its exact
// signing input carries a valid signature of the zone key, checked with crypto/ecdsa alone.
func FuzzVerify(f *testing.F) {
	priv := fuzzKey(f)
	signer, err := NewSigner(priv)
	if err != nil {
		f.Fatal(err)
	}
	for typ, c := range map[string]*Claims{TypSession: fuzzClaims(UseSession, testIssuer), TypResource: fuzzClaims(UseResource, testResource)} {
		tok, err := signer.Sign(typ, c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	v := &Verifier{Keys: KeySet{signer.KID(): &priv.PublicKey}, Now: func() time.Time { return time.Unix(fuzzNow, 0) }}
	f.Fuzz(func(t *testing.T, token string) {
		for _, want := range []Expect{sessionExpect, resourceExpect} {
			c, err := v.Verify(context.Background(), token, want)
			if err != nil {
				var e *Error
				if c != nil || !errors.As(err, &e) {
					t.Fatalf("rejection returned claims %v or a foreign error %v", c, err)
				}
				continue
			}
			if !genuinelySigned(&priv.PublicKey, token) {
				t.Fatalf("verified a token that is not genuinely signed: %q", token)
			}
			if c.Issuer != want.Issuer || c.Audience != want.Audience || c.Use != want.Use || c.ZoneID != want.ZoneID {
				t.Fatalf("verified claims %+v do not match %+v", c, want)
			}
		}
	})
}

// FuzzParseJWKS: no input panics, and whatever is accepted is a set of valid P-256 keys that
// survives a round trip through its published form.
func FuzzParseJWKS(f *testing.F) {
	k := fuzzKey(f)
	jwk, err := PublicJWK(&k.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	doc, err := json.Marshal(JWKS{Keys: []JWK{jwk}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ParseJWKS(data)
		if err != nil {
			if set != nil {
				t.Fatal("error with a key set")
			}
			return
		}
		var again JWKS
		for kid, pub := range set {
			if kid == "" || pub == nil {
				t.Fatalf("empty kid or nil key in %v", set)
			}
			j, err := PublicJWK(pub)
			if err != nil {
				t.Fatalf("accepted an invalid key: %v", err)
			}
			j.KID = kid
			again.Keys = append(again.Keys, j)
		}
		b, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		round, err := ParseJWKS(b)
		if err != nil {
			t.Fatalf("published form of an accepted set does not parse: %v", err)
		}
		if len(round) != len(set) {
			t.Fatalf("round trip kept %d of %d keys", len(round), len(set))
		}
		for kid, pub := range set {
			if !round[kid].Equal(pub) {
				t.Fatalf("key %q changed in the round trip", kid)
			}
		}
	})
}

// FuzzCheckHeader holds the header fast path to the JSON one: whatever canonicalHeader
// accepts, parseHeader accepts with the same kid; and checkHeader, which tries the fast
// path first, decides every header as parseHeader alone does.
func FuzzCheckHeader(f *testing.F) {
	for _, seed := range []string{
		`{"alg":"ES256","kid":"k1","typ":"session+jwt"}`,
		`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`,
		`{"alg":"ES256","kid":"a\"b","typ":"at+jwt"}`,
		`{"alg":"ES256","kid":"a\u0022b","typ":"at+jwt"}`,
		`{"alg":"ES256","kid":"","typ":"at+jwt"}`,
		`{"alg":"ES256","kid":"k1","typ":"at+jwt","jku":"https://x"}`,
		`{"alg":"ES256","kid":"k1","typ":"at+jwt"}  `,
		`{"alg":"ES256","kid":"k1","typ":"at+jwt","typ":"at+jwt"}`,
		`{"alg":"ES256","kid":"k1","kid":"k2","typ":"at+jwt"}`,
		`{"alg":"ES256","kid":"k1","typ":"session+jwt"}{"alg":"ES256","kid":"k1","typ":"session+jwt"}`,
		`{"alg":"none","kid":"k1","typ":"at+jwt"}`,
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, resource bool) {
		typ := TypSession
		if resource {
			typ = TypResource
		}
		slowKID, slowErr := parseHeader(raw, typ)
		if kid, ok := canonicalHeader(raw, typ); ok && (slowErr != nil || kid != slowKID) {
			t.Fatalf("fast path took %q as kid %q; the JSON path says kid %q, %v", raw, kid, slowKID, slowErr)
		}
		kid, err := checkHeader(raw, typ)
		if kid != slowKID || !errors.Is(err, slowErr) || (err == nil) != (slowErr == nil) {
			t.Fatalf("checkHeader(%q) = %q, %v; parseHeader = %q, %v", raw, kid, err, slowKID, slowErr)
		}
	})
}

// FuzzDecodeClaims holds the claims fast path to go-jose's JSON decoder: whatever
// decodeClaimsFast accepts, the decoder accepts too, with the same claims.
func FuzzDecodeClaims(f *testing.F) {
	delegated := fuzzClaims(UseResource, testIssuer+"/api")
	delegated.DelegationEdgeID = "edg_1"
	delegated.DelegationPath = []string{"edg_0", "edg_1"}
	delegated.HopCount = 2
	delegated.DelegationGraphEpoch = 7
	delegated.Scope = "read write"
	withActor := fuzzClaims(UseResource, testIssuer+"/api")
	withActor.Act = &Actor{Sub: "agent-0", Act: &Actor{Sub: "agent-1", Act: &Actor{}}}
	for _, c := range []*Claims{fuzzClaims(UseSession, testIssuer), delegated, withActor} {
		raw, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, seed := range []string{
		`{}`, `{"sub":"a","sub":"b"}`, `{"SUB":"a"}`, `{"exp":01}`, `{"exp":-1}`, `{"exp":1e3}`,
		`{"exp":9223372036854775808}`, `{"hop_count":9223372036854775807}`, `{"sub":"a\u0062"}`,
		`{"delegation_path":[]}`, `{"delegation_path":["a",]}`, `{"sub":null}`, `{"sub":"a"} `,
		`{"sub":"a"}{}`, `{"unknown":"x"}`, `{"sub":"é"}`, `{"act":{}}`, `{"act":null}`,
		`{"act":{"act":{"sub":"b"},"sub":"a"}}`, `{"act":{"sub":"a","sub":"b"}}`, `{"act":{"SUB":"a"}}`,
		`{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{"act":{}}}}}}}}}}}}}}}}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var fast Claims
		if !decodeClaimsFast(payload, &fast) {
			return
		}
		var slow Claims
		if err := josejson.Unmarshal(payload, &slow); err != nil {
			t.Fatalf("fast path accepted %q, which the JSON decoder refuses: %v", payload, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast path %+v, JSON decoder %+v", payload, fast, slow)
		}
	})
}
