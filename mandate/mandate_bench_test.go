package mandate

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	"testing"
)

// BenchmarkRawES256Sign is the floor for BenchmarkSign: crypto/ecdsa signing a SHA-256 digest.
func BenchmarkRawES256Sign(b *testing.B) {
	priv := mustKey(b)
	digest := sha256.Sum256([]byte("header.payload"))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ecdsa.Sign(rand.Reader, priv, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawES256Verify is the floor for BenchmarkVerify.
func BenchmarkRawES256Verify(b *testing.B) {
	priv := mustKey(b)
	digest := sha256.Sum256([]byte("header.payload"))
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	r, s = new(big.Int).Set(r), new(big.Int).Set(s)
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.Verify(&priv.PublicKey, digest[:], r, s) {
			b.Fatal("signature did not verify")
		}
	}
}

func BenchmarkSign(b *testing.B) {
	f := newFixture(b)
	c := f.resourceClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.signer.Sign(TypResource, c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	tok := f.sign(b, TypResource, f.resourceClaims())
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.v.Verify(ctx, tok, resourceExpect); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedToken is a repeated mandate through the verified-token cache.
func BenchmarkVerifyCachedToken(b *testing.B) {
	f := newFixture(b)
	cv := NewCachedVerifier(f.v, 0)
	c := f.resourceClaims()
	tok := f.sign(b, TypResource, c)
	want := Expect{Issuer: testIssuer, ZoneID: testZone, Audience: testResource, Use: UseResource}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cv.Verify(ctx, tok, want); err != nil {
			b.Fatal(err)
		}
	}
}
