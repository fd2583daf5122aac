package verify

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// benchVerifier is a verifier requiring the read scope whose revocation set holds a
// thousand unrelated anchors. Each returned mandate has been verified once already, so
// every further call is a cache hit followed by the revocation, scope and epoch checks.
func benchVerifier(b *testing.B) (v *Verifier, direct, delegated string) {
	b.Helper()
	f := newFixture(b)
	for i := range 1000 {
		f.revokeSession(testZone, fmt.Sprintf("sid-x%d", i))
	}
	v = f.verifier(b, func(o *Options) { o.RejectStaleEpoch = true })
	direct, delegated = f.token(b, nil), f.sign(b, f.delegatedClaims())
	for _, tok := range []string{direct, delegated} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
	return v, direct, delegated
}

func BenchmarkVerifyCached(b *testing.B) {
	v, direct, delegated := benchVerifier(b)
	ctx := context.Background()
	for _, bc := range []struct{ name, token string }{
		{"direct mandate", direct},
		{"mandate delegated over two hops", delegated},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, bc.token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMiddleware(b *testing.B) {
	v, _, token := benchVerifier(b)
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	r := httptest.NewRequest(http.MethodGet, "http://api.example/v1/things", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusNoContent {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
