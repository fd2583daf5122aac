package mandate

import (
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	testBase     = "https://sts.example"
	testZone     = "zone-a"
	testResource = "https://api.example/v1"
)

var testIssuer = IssuerURL(testBase, testZone)

// fixture is a zone key, its signer and a verifier pinned to it with a fake clock.
type fixture struct {
	priv   *ecdsa.PrivateKey
	signer *Signer
	clock  *fakeClock
	v      *Verifier
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	priv := mustKey(t)
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	return &fixture{
		priv:   priv,
		signer: s,
		clock:  clock,
		v:      &Verifier{Keys: KeySet{s.KID(): &priv.PublicKey}, Now: clock.Now},
	}
}

func (f *fixture) sessionClaims() *Claims {
	now := f.clock.Now().Unix()
	return &Claims{
		Issuer: testIssuer, Subject: "agent-1", Audience: testIssuer,
		Expiry: now + 3600, IssuedAt: now, NotBefore: now, ID: "jti-1",
		ZoneID: testZone, ClientID: "agent-1", SID: "sid-1", RootSID: "sid-1", Use: UseSession,
	}
}

func (f *fixture) resourceClaims() *Claims {
	c := f.sessionClaims()
	c.Audience, c.Use, c.Scope = testResource, UseResource, "read write"
	c.Act = &Actor{Sub: "agent-2", Act: &Actor{Sub: "agent-1"}}
	c.DelegationEdgeID, c.DelegationPath, c.HopCount, c.DelegationGraphEpoch = "e1", []string{"e1"}, 1, 4
	return c
}

func (f *fixture) sign(t testing.TB, typ string, c *Claims) string {
	t.Helper()
	tok, err := f.signer.Sign(typ, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// header returns the JSON of a valid header, with changes applied.
func (f *fixture) header(changes map[string]any) string {
	h := map[string]any{"alg": "ES256", "kid": f.signer.KID(), "typ": TypSession}
	for k, v := range changes {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	b, err := json.Marshal(h)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// payload returns the JSON of valid session claims, with members replaced or removed.
func (f *fixture) payload(changes map[string]any) string {
	b, err := json.Marshal(f.sessionClaims())
	if err != nil {
		panic(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	for k, v := range changes {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err = json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

var sessionExpect = Expect{Issuer: testIssuer, ZoneID: testZone, Audience: testIssuer, Use: UseSession}
var resourceExpect = Expect{Issuer: testIssuer, ZoneID: testZone, Audience: testResource, Use: UseResource}

var allReasons = []error{
	ErrTooLarge, ErrMalformed, ErrAlgorithm, ErrType, ErrUnknownKey, ErrSignature, ErrIssuer, ErrAudience,
	ErrUse, ErrExpired, ErrNotYetValid, ErrIssuedInFuture, ErrZone, ErrKeysUnavailable,
}

// assertReason checks that err is an *Error matching want and no other reason.
func assertReason(t *testing.T, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("verification succeeded, want %v", want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *mandate.Error", err)
	}
	for _, r := range allReasons {
		if got := errors.Is(err, r); got != (r == want) {
			t.Fatalf("errors.Is(%q, %q) = %v", err, r, got)
		}
	}
	if err.Error() != e.Detail || !strings.HasPrefix(e.Detail, "mandate: ") {
		t.Fatalf("Error() = %q, Detail = %q", err.Error(), e.Detail)
	}
}

func TestSignProducesExactlyTheContractHeader(t *testing.T) {
	f := newFixture(t)
	for typ, c := range map[string]*Claims{TypSession: f.sessionClaims(), TypResource: f.resourceClaims()} {
		tok := f.sign(t, typ, c)
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("token has %d parts", len(parts))
		}
		var h map[string]any
		if err := json.Unmarshal(mustDecode(t, parts[0]), &h); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"alg": "ES256", "kid": f.signer.KID(), "typ": typ}
		if !reflect.DeepEqual(h, want) {
			t.Fatalf("header = %v, want %v", h, want)
		}
		if !genuinelySigned(&f.priv.PublicKey, tok) {
			t.Fatal("signature does not verify with crypto/ecdsa")
		}
		var got Claims
		if err := json.Unmarshal(mustDecode(t, parts[1]), &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, c) {
			t.Fatalf("payload = %+v, want %+v", got, c)
		}
	}
	if kid, _ := Thumbprint(&f.priv.PublicKey); f.signer.KID() != kid {
		t.Fatalf("KID() = %s, want the thumbprint %s", f.signer.KID(), kid)
	}
}

func TestSignRefusesInconsistentOrOversizedTokens(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		typ  string
		c    *Claims
	}{
		{"a session typ with resource claims", TypSession, f.resourceClaims()},
		{"a resource typ with session claims", TypResource, f.sessionClaims()},
		{"an unknown typ", "JWT", f.sessionClaims()},
		{"nil claims", TypSession, nil},
		{"claims beyond 8 KiB", TypResource, func() *Claims {
			c := f.resourceClaims()
			c.Scope = strings.Repeat("s", MaxTokenSize)
			return c
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := f.signer.Sign(tt.typ, tt.c); err == nil {
				t.Fatalf("Sign succeeded: %s", tok)
			}
		})
	}
}

func TestVerifyAcceptsGenuineMandates(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	sc := f.sessionClaims()
	got, err := f.v.Verify(ctx, f.sign(t, TypSession, sc), sessionExpect)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sc) {
		t.Fatalf("claims = %+v, want %+v", got, sc)
	}

	rc := f.resourceClaims()
	got, err = f.v.Verify(ctx, f.sign(t, TypResource, rc), resourceExpect)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rc) {
		t.Fatalf("claims = %+v, want %+v", got, rc)
	}
}

func TestVerifyIgnoresUnknownClaims(t *testing.T) {
	f := newFixture(t)
	tok := rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"future_claim": map[string]any{"x": 1}}))
	c, err := f.v.Verify(context.Background(), tok, sessionExpect)
	if err != nil {
		t.Fatal(err)
	}
	if c.SID != "sid-1" {
		t.Fatalf("sid = %q", c.SID)
	}
}

func TestVerifyRejects(t *testing.T) {
	f := newFixture(t)
	other := mustKey(t)
	otherSigner, err := NewSigner(other)
	if err != nil {
		t.Fatal(err)
	}
	good := f.sign(t, TypSession, f.sessionClaims())
	parts := strings.Split(good, ".")
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	now := f.clock.Now().Unix()

	// An HS256 token whose HMAC key is the zone's public key, the classic algorithm confusion.
	pubBytes, err := f.priv.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	hsInput := enc(f.header(map[string]any{"alg": "HS256"})) + "." + parts[1]
	mac := hmac.New(sha256.New, pubBytes)
	mac.Write([]byte(hsInput))
	hsToken := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	// A signature whose last character carries non-zero padding bits: same bytes, other spelling.
	sig := parts[2]
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", sig[len(sig)-1])
	loose := parts[0] + "." + parts[1] + "." + sig[:len(sig)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])

	tests := []struct {
		name  string
		token string
		want  Expect
		err   error
	}{
		{"a token over 8 KiB", strings.Repeat("a", MaxTokenSize+1), sessionExpect, ErrTooLarge},
		{"an empty token", "", sessionExpect, ErrMalformed},
		{"two parts", parts[0] + "." + parts[1], sessionExpect, ErrMalformed},
		{"four parts", good + ".x", sessionExpect, ErrMalformed},
		{"a padded part", good + "=", sessionExpect, ErrMalformed},
		{"a line break inside a part", parts[0] + "." + parts[1][:10] + "\n" + parts[1][10:] + "." + parts[2], sessionExpect, ErrMalformed},
		{"non-canonical base64 padding bits", loose, sessionExpect, ErrMalformed},
		{"a header that is not json", enc("{alg") + "." + parts[1] + "." + parts[2], sessionExpect, ErrMalformed},
		{"a header with trailing data", enc(f.header(nil)+"{}") + "." + parts[1] + "." + parts[2], sessionExpect, ErrMalformed},
		{"a header with a duplicate alg", rawSign(t, f.priv, `{"alg":"ES256","alg":"none","kid":"`+f.signer.KID()+`","typ":"session+jwt"}`, f.payload(nil)), sessionExpect, ErrMalformed},
		{"alg none", enc(f.header(map[string]any{"alg": "none"})) + "." + parts[1] + ".", sessionExpect, ErrAlgorithm},
		{"HS256 keyed with the public key", hsToken, sessionExpect, ErrAlgorithm},
		{"alg RS256", rawSign(t, f.priv, f.header(map[string]any{"alg": "RS256"}), f.payload(nil)), sessionExpect, ErrAlgorithm},
		{"alg in lower case", rawSign(t, f.priv, f.header(map[string]any{"alg": "es256"}), f.payload(nil)), sessionExpect, ErrAlgorithm},
		{"no alg", rawSign(t, f.priv, f.header(map[string]any{"alg": nil}), f.payload(nil)), sessionExpect, ErrAlgorithm},
		{"alg not a string", rawSign(t, f.priv, f.header(map[string]any{"alg": 1}), f.payload(nil)), sessionExpect, ErrAlgorithm},
		{"no typ", rawSign(t, f.priv, f.header(map[string]any{"typ": nil}), f.payload(nil)), sessionExpect, ErrType},
		{"typ JWT", rawSign(t, f.priv, f.header(map[string]any{"typ": "JWT"}), f.payload(nil)), sessionExpect, ErrType},
		{"a session mandate presented to a resource", good, resourceExpect, ErrType},
		{"a jku header", rawSign(t, f.priv, f.header(map[string]any{"jku": "https://evil.example/jwks"}), f.payload(nil)), sessionExpect, ErrMalformed},
		{"an x5u header", rawSign(t, f.priv, f.header(map[string]any{"x5u": "https://evil.example/cert"}), f.payload(nil)), sessionExpect, ErrMalformed},
		{"a jwk header", rawSign(t, f.priv, f.header(map[string]any{"jwk": map[string]any{"kty": "EC"}}), f.payload(nil)), sessionExpect, ErrMalformed},
		{"an x5c header", rawSign(t, f.priv, f.header(map[string]any{"x5c": []string{"AAAA"}}), f.payload(nil)), sessionExpect, ErrMalformed},
		{"a crit header", rawSign(t, f.priv, f.header(map[string]any{"crit": []string{"exp"}}), f.payload(nil)), sessionExpect, ErrMalformed},
		{"a kid that is not a string", rawSign(t, f.priv, f.header(map[string]any{"kid": 7}), f.payload(nil)), sessionExpect, ErrMalformed},
		{"no kid", rawSign(t, f.priv, f.header(map[string]any{"kid": nil}), f.payload(nil)), sessionExpect, ErrUnknownKey},
		{"an empty kid", rawSign(t, f.priv, f.header(map[string]any{"kid": ""}), f.payload(nil)), sessionExpect, ErrUnknownKey},
		{"a token of another zone's key", otherSignerToken(t, otherSigner, f.sessionClaims()), sessionExpect, ErrUnknownKey},
		{"another zone's key under this zone's kid", rawSign(t, other, f.header(nil), f.payload(nil)), sessionExpect, ErrSignature},
		{"a modified payload", parts[0] + "." + enc(f.payload(map[string]any{"sub": "admin"})) + "." + parts[2], sessionExpect, ErrSignature},
		{"an empty signature", parts[0] + "." + parts[1] + ".", sessionExpect, ErrSignature},
		{"a truncated signature", parts[0] + "." + parts[1] + "." + parts[2][:40], sessionExpect, ErrSignature},
		{"claims that are not json", rawSign(t, f.priv, f.header(nil), "not json"), sessionExpect, ErrMalformed},
		{"claims with trailing data", rawSign(t, f.priv, f.header(nil), f.payload(nil)+`{"aud":"x"}`), sessionExpect, ErrMalformed},
		{"claims with a duplicate aud", rawSign(t, f.priv, f.header(nil), strings.TrimSuffix(f.payload(nil), "}")+`,"aud":"https://evil.example"}`), sessionExpect, ErrMalformed},
		{"claims with a duplicate nested act", rawSign(t, f.priv, f.header(map[string]any{"typ": TypResource}), `{"act":{"sub":"a","sub":"b"}}`), resourceExpect, ErrMalformed},
		{"claims that are an array", rawSign(t, f.priv, f.header(nil), `[]`), sessionExpect, ErrMalformed},
		{"an exp that is not a number", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"exp": "soon"})), sessionExpect, ErrMalformed},
		{"another issuer", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"iss": IssuerURL(testBase, "zone-b")})), sessionExpect, ErrIssuer},
		{"no issuer", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"iss": nil})), sessionExpect, ErrIssuer},
		{"another audience", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"aud": testResource})), sessionExpect, ErrAudience},
		{"an audience array", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"aud": []string{testIssuer}})), sessionExpect, ErrMalformed},
		{"a use that disagrees with typ", rawSign(t, f.priv, f.header(map[string]any{"typ": TypResource}), f.payload(map[string]any{"aud": testResource})), resourceExpect, ErrUse},
		{"no use", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"use": nil})), sessionExpect, ErrUse},
		{"no exp", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"exp": nil})), sessionExpect, ErrMalformed},
		{"an exp beyond the leeway", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"exp": now - 30})), sessionExpect, ErrExpired},
		{"an nbf beyond the leeway", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"nbf": now + 31})), sessionExpect, ErrNotYetValid},
		{"an nbf at the end of time", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"nbf": int64(1<<63 - 1)})), sessionExpect, ErrNotYetValid},
		{"an iat beyond the leeway", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"iat": now + 31})), sessionExpect, ErrIssuedInFuture},
		{"another zone id", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"zone_id": "zone-b"})), sessionExpect, ErrZone},
		{"no zone id", rawSign(t, f.priv, f.header(nil), f.payload(map[string]any{"zone_id": nil})), sessionExpect, ErrZone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := f.v.Verify(context.Background(), tt.token, tt.want)
			if c != nil {
				t.Fatalf("claims returned with an error: %+v", c)
			}
			assertReason(t, err, tt.err)
		})
	}
}

func otherSignerToken(t *testing.T, s *Signer, c *Claims) string {
	t.Helper()
	tok, err := s.Sign(TypSession, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestVerifyCaseVariantsCannotOverrideClaims: a member that differs from a claim only in case is an
// unknown claim, never a second value for the real one.
func TestVerifyCaseVariantsCannotOverrideClaims(t *testing.T) {
	f := newFixture(t)
	tok := rawSign(t, f.priv, f.header(map[string]any{"KID": "other", "Typ": "at+jwt"}),
		f.payload(map[string]any{"AUD": testResource, "Sub": "admin", "ZONE_ID": "zone-b"}))
	c, err := f.v.Verify(context.Background(), tok, sessionExpect)
	if err != nil {
		t.Fatal(err)
	}
	if c.Audience != testIssuer || c.Subject != "agent-1" || c.ZoneID != testZone {
		t.Fatalf("case variants leaked into claims: %+v", c)
	}
}

func TestVerifyTimeBoundaries(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now().Unix()
	tests := []struct {
		name   string
		leeway time.Duration
		claims map[string]any
		err    error
	}{
		{"an exp inside the default leeway passes", 0, map[string]any{"exp": now - 29}, nil},
		{"an exp at the end of the default leeway fails", 0, map[string]any{"exp": now - 30}, ErrExpired},
		{"an nbf at the end of the default leeway passes", 0, map[string]any{"nbf": now + 30}, nil},
		{"an iat at the end of the default leeway passes", 0, map[string]any{"iat": now + 30}, nil},
		{"a custom leeway widens exp", time.Minute, map[string]any{"exp": now - 59}, nil},
		{"a custom leeway still ends", time.Minute, map[string]any{"exp": now - 60}, ErrExpired},
		{"a negative leeway means none for exp", -1, map[string]any{"exp": now}, ErrExpired},
		{"a negative leeway means none for nbf", -1, map[string]any{"nbf": now + 1}, ErrNotYetValid},
		{"a negative leeway still accepts the present", -1, map[string]any{"exp": now + 1, "nbf": now, "iat": now}, nil},
		{"absent nbf and iat are fine", 0, map[string]any{"nbf": nil, "iat": nil}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &Verifier{Keys: f.v.Keys, Leeway: tt.leeway, Now: f.clock.Now}
			_, err := v.Verify(context.Background(), rawSign(t, f.priv, f.header(nil), f.payload(tt.claims)), sessionExpect)
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			assertReason(t, err, tt.err)
		})
	}
}

func TestVerifyFollowsTheClock(t *testing.T) {
	f := newFixture(t)
	tok := f.sign(t, TypSession, f.sessionClaims())
	if _, err := f.v.Verify(context.Background(), tok, sessionExpect); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour + 30*time.Second)
	_, err := f.v.Verify(context.Background(), tok, sessionExpect)
	assertReason(t, err, ErrExpired)
}

// TestVerifyChecksInContractOrder: a token wrong in several ways reports the earliest check.
func TestVerifyChecksInContractOrder(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now().Unix()
	wrong := map[string]any{"iss": "x", "aud": "x", "use": "x", "exp": now - 3600, "zone_id": "x"}
	steps := []struct {
		fix string
		err error
	}{
		{"", ErrIssuer}, {"iss", ErrAudience}, {"aud", ErrUse}, {"use", ErrExpired}, {"exp", ErrZone},
	}
	good := f.sessionClaims()
	fixes := map[string]any{"iss": good.Issuer, "aud": good.Audience, "use": good.Use, "exp": good.Expiry}
	for _, s := range steps {
		if s.fix != "" {
			wrong[s.fix] = fixes[s.fix]
		}
		_, err := f.v.Verify(context.Background(), rawSign(t, f.priv, f.header(nil), f.payload(wrong)), sessionExpect)
		assertReason(t, err, s.err)
	}
	// Header checks come before the key and the signature.
	_, err := f.v.Verify(context.Background(), rawSign(t, mustKey(t), f.header(map[string]any{"typ": "JWT", "kid": "nope"}), "x"), sessionExpect)
	assertReason(t, err, ErrType)
	_, err = f.v.Verify(context.Background(), rawSign(t, mustKey(t), f.header(map[string]any{"kid": "nope", "x5u": "u"}), "x"), sessionExpect)
	assertReason(t, err, ErrMalformed)
	_, err = f.v.Verify(context.Background(), rawSign(t, mustKey(t), f.header(map[string]any{"kid": "nope"}), "x"), sessionExpect)
	assertReason(t, err, ErrUnknownKey)
}

type failingKeys struct{ err error }

func (k failingKeys) Key(context.Context, string) (*ecdsa.PublicKey, error) { return nil, k.err }

func TestVerifyReportsAKeySourceFailureAsUnavailable(t *testing.T) {
	f := newFixture(t)
	cause := errors.New("jwks endpoint down")
	v := &Verifier{Keys: failingKeys{cause}, Now: f.clock.Now}
	_, err := v.Verify(context.Background(), f.sign(t, TypSession, f.sessionClaims()), sessionExpect)
	assertReason(t, err, ErrKeysUnavailable)
	if !errors.Is(err, cause) {
		t.Fatalf("cause lost: %v", err)
	}
}

func TestVerifyRequiresACompleteExpectation(t *testing.T) {
	f := newFixture(t)
	tok := f.sign(t, TypSession, f.sessionClaims())
	for name, want := range map[string]Expect{
		"no issuer":   {ZoneID: testZone, Audience: testIssuer, Use: UseSession},
		"no zone":     {Issuer: testIssuer, Audience: testIssuer, Use: UseSession},
		"no audience": {Issuer: testIssuer, ZoneID: testZone, Use: UseSession},
		"no use":      {Issuer: testIssuer, ZoneID: testZone, Audience: testIssuer},
		"unknown use": {Issuer: testIssuer, ZoneID: testZone, Audience: testIssuer, Use: "admin"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.v.Verify(context.Background(), tok, want)
			if err == nil {
				t.Fatal("Verify accepted an incomplete expectation")
			}
			for _, r := range allReasons {
				if errors.Is(err, r) {
					t.Fatalf("configuration error %v matches token reason %v", err, r)
				}
			}
		})
	}
	if _, err := (&Verifier{}).Verify(context.Background(), tok, sessionExpect); err == nil {
		t.Fatal("Verify without a key source succeeded")
	}
}
