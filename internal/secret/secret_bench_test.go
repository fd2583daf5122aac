package secret

import (
	"context"
	"testing"
)

// BenchmarkVerifyCached is the cost of a repeat authentication inside the cache TTL.
func BenchmarkVerifyCached(b *testing.B) {
	v, err := NewVerifier(VerifierOptions{})
	if err != nil {
		b.Fatal(err)
	}
	phc, err := Hash("pw")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if ok, err := v.Verify(ctx, Request{ZoneID: "zone-a", ClientID: "app", PHC: phc, Secret: "pw"}); err != nil || !ok {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := v.Verify(ctx, Request{ZoneID: "zone-a", ClientID: "app", PHC: phc, Secret: "pw"}); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkHash is the deliberate cost of one Argon2id run at the contract parameters.
func BenchmarkHash(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Hash("pw"); err != nil {
			b.Fatal(err)
		}
	}
}
