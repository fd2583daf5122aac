package mandate

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingKeys counts key lookups, i.e. full verifications.
type countingKeys struct {
	KeySet
	n atomic.Int64
}

func (k *countingKeys) Key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	k.n.Add(1)
	return k.KeySet.Key(ctx, kid)
}

func TestCachedVerifier(t *testing.T) {
	f := newFixture(t)
	keys := &countingKeys{KeySet: f.v.Keys.(KeySet)}
	f.v.Keys = keys
	cv := NewCachedVerifier(f.v, 2)
	want := Expect{Issuer: testIssuer, ZoneID: testZone, Audience: testIssuer, Use: UseSession}
	tok := f.sign(t, TypSession, f.sessionClaims())
	ctx := context.Background()

	t.Run("a repeated token is verified once", func(t *testing.T) {
		for range 3 {
			c, err := cv.Verify(ctx, tok, want)
			if err != nil || c.SID != "sid-1" {
				t.Fatalf("%v %v", c, err)
			}
		}
		if keys.n.Load() != 1 {
			t.Fatalf("%d full verifications, want 1", keys.n.Load())
		}
	})
	t.Run("another expectation is not served from the cache", func(t *testing.T) {
		other := want
		other.Audience = testResource
		if _, err := cv.Verify(ctx, tok, other); !errors.Is(err, ErrAudience) {
			t.Fatalf("err = %v, want ErrAudience", err)
		}
	})
	t.Run("failures are not cached", func(t *testing.T) {
		bad := tok[:len(tok)-4] + "AAAA"
		before := keys.n.Load()
		for range 2 {
			if _, err := cv.Verify(ctx, bad, want); err == nil {
				t.Fatal("tampered token verified")
			}
		}
		if keys.n.Load() != before+2 {
			t.Fatal("a failed verification was cached")
		}
	})
	t.Run("a cached token expires with its exp", func(t *testing.T) {
		f.clock.Advance(time.Hour + DefaultLeeway + time.Second)
		if _, err := cv.Verify(ctx, tok, want); !errors.Is(err, ErrExpired) {
			t.Fatalf("err = %v, want ErrExpired", err)
		}
	})
	t.Run("the cache stays bounded and a full one evicts only its oldest token", func(t *testing.T) {
		var toks []string
		for i := range 5 {
			c := f.sessionClaims()
			c.ID = strings.Repeat("j", i+1)
			toks = append(toks, f.sign(t, TypSession, c))
			if _, err := cv.Verify(ctx, toks[i], want); err != nil {
				t.Fatal(err)
			}
			if n := cv.entries.Len(); n > 2 {
				t.Fatalf("%d entries in a cache of 2", n)
			}
		}
		// The last two stored are still cached: verifying them again checks no signature.
		before := keys.n.Load()
		for _, tok := range toks[3:] {
			if _, err := cv.Verify(ctx, tok, want); err != nil {
				t.Fatal(err)
			}
		}
		if keys.n.Load() != before {
			t.Fatalf("%d full verifications of the two newest tokens, want none", keys.n.Load()-before)
		}
	})
	t.Run("oversized tokens are refused before hashing", func(t *testing.T) {
		if _, err := cv.Verify(ctx, strings.Repeat("a", MaxTokenSize+1), want); !errors.Is(err, ErrTooLarge) {
			t.Fatal(err)
		}
	})
}
