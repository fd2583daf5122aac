package mandate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestThumbprintFollowsRFC7638(t *testing.T) {
	k := mustKey(t)
	point, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	// RFC 7638 section 3.2: required members only, lexicographic order, no white space.
	canonical := `{"crv":"P-256","kty":"EC","x":"` + enc(point[1:33]) + `","y":"` + enc(point[33:]) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	got, err := Thumbprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if want := enc(sum[:]); got != want {
		t.Fatalf("Thumbprint = %s, want %s", got, want)
	}
}

func TestThumbprintRejectsOtherCurves(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Thumbprint(&k.PublicKey); err == nil {
		t.Fatal("Thumbprint accepted a P-384 key")
	}
	if _, err := PublicJWK(&k.PublicKey); err == nil {
		t.Fatal("PublicJWK accepted a P-384 key")
	}
	if _, err := NewSigner(k); err == nil {
		t.Fatal("NewSigner accepted a P-384 key")
	}
}

func TestPublicJWKRoundTripsThroughParseJWKS(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t)
	var doc JWKS
	for _, k := range []*ecdsa.PrivateKey{k1, k2} {
		jwk, err := PublicJWK(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if jwk.Kty != "EC" || jwk.Crv != "P-256" || jwk.Use != "sig" || jwk.Alg != "ES256" {
			t.Fatalf("unexpected JWK members: %+v", jwk)
		}
		if kid, _ := Thumbprint(&k.PublicKey); jwk.KID != kid {
			t.Fatalf("kid %s is not the thumbprint %s", jwk.KID, kid)
		}
		if len(jwk.X) != 43 || len(jwk.Y) != 43 {
			t.Fatalf("coordinates are not 32 bytes: %+v", jwk)
		}
		doc.Keys = append(doc.Keys, jwk)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":`) {
		t.Fatalf("JWKS member names are wrong: %s", data)
	}
	set, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 2 {
		t.Fatalf("parsed %d keys, want 2", len(set))
	}
	for _, k := range []*ecdsa.PrivateKey{k1, k2} {
		kid, _ := Thumbprint(&k.PublicKey)
		got, err := set.Key(context.Background(), kid)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(&k.PublicKey) {
			t.Fatalf("key %s did not round trip", kid)
		}
	}
	if _, err := set.Key(context.Background(), "nope"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("missing kid gave %v, want ErrUnknownKey", err)
	}
}

func TestParseJWKS(t *testing.T) {
	k := mustKey(t)
	good, err := PublicJWK(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	other, err := PublicJWK(&mustKey(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	member := func(j JWK, extra string) string {
		s := `{"kty":"` + j.Kty + `","crv":"` + j.Crv + `","kid":"` + j.KID + `","x":"` + j.X + `","y":"` + j.Y + `"`
		if j.Use != "" {
			s += `,"use":"` + j.Use + `"`
		}
		if j.Alg != "" {
			s += `,"alg":"` + j.Alg + `"`
		}
		return s + extra + "}"
	}
	with := func(f func(*JWK)) JWK {
		j := good
		f(&j)
		return j
	}
	// A point off the curve: the x coordinate of the good key with y of another key.
	offCurve := with(func(j *JWK) { j.Y = other.Y })
	pad := func(j *JWK) { j.X = base64.RawURLEncoding.EncodeToString(append([]byte{0}, mustDecode(t, j.X)...)) }

	tests := []struct {
		name    string
		doc     string
		wantErr bool
		kids    []string
	}{
		{"a published key is kept", `{"keys":[` + member(good, "") + `]}`, false, []string{good.KID}},
		{"use and alg may be absent", `{"keys":[` + member(with(func(j *JWK) { j.Use, j.Alg = "", "" }), "") + `]}`, false, []string{good.KID}},
		{"unknown members are ignored", `{"keys":[` + member(good, `,"x5t":"abc"`) + `],"other":1}`, false, []string{good.KID}},
		{
			"keys of other types, curves, algorithms and uses are skipped",
			`{"keys":[` + member(good, "") + `,{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"},` +
				member(with(func(j *JWK) { j.KID, j.Crv = "p384", "P-384" }), "") + "," +
				member(with(func(j *JWK) { j.KID, j.Alg = "es384", "ES384" }), "") + "," +
				member(with(func(j *JWK) { j.KID, j.Use = "enc", "enc" }), "") + "," +
				member(with(func(j *JWK) { j.KID = "" }), "") + `]}`,
			false, []string{good.KID},
		},
		{"a private d member is refused", `{"keys":[` + member(good, `,"d":"AAAA"`) + `]}`, true, nil},
		{"a symmetric k member is refused", `{"keys":[` + member(good, "") + `,{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`, true, nil},
		{"a point off the curve is refused", `{"keys":[` + member(offCurve, "") + `]}`, true, nil},
		{"a short coordinate is refused", `{"keys":[` + member(with(func(j *JWK) { j.X = j.X[:40] }), "") + `]}`, true, nil},
		{"a 33-byte coordinate is refused", `{"keys":[` + member(with(pad), "") + `]}`, true, nil},
		{"duplicate kids are refused", `{"keys":[` + member(good, "") + "," + member(with(func(j *JWK) { j.X, j.Y = other.X, other.Y }), "") + `]}`, true, nil},
		{"duplicate members are refused", `{"keys":[` + member(good, `,"kid":"x"`) + `]}`, true, nil},
		{"a non-string member is refused", `{"keys":[` + member(good, `,"use":1`) + `]}`, true, nil},
		{"a missing keys member is refused", `{}`, true, nil},
		{"a set without usable keys is refused", `{"keys":[]}`, true, nil},
		{"trailing data is refused", `{"keys":[` + member(good, "") + `]} x`, true, nil},
		{"a non-object is refused", `[]`, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := ParseJWKS([]byte(tt.doc))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseJWKS accepted %s", tt.doc)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseJWKS: %v", err)
			}
			if len(set) != len(tt.kids) {
				t.Fatalf("kept %d keys, want %d", len(set), len(tt.kids))
			}
			for _, kid := range tt.kids {
				if set[kid] == nil || !set[kid].Equal(&k.PublicKey) {
					t.Fatalf("kid %s missing or wrong", kid)
				}
			}
		})
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
