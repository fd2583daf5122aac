package mandate

import (
	"context"
	"crypto/sha256"
	"time"

	"github.com/caracalgw/caracal/internal/cache"
)

// DefaultCacheEntries bounds a CachedVerifier when no size is given.
const DefaultCacheEntries = 100_000

// CachedVerifier remembers tokens that verified, keyed by the SHA-256 of the token (the
// token itself is not kept), until they expire, so a mandate presented again costs a hash
// and a map lookup instead of a signature check. Times (exp, nbf, iat) are re-checked on
// every hit against the current clock; the expectation must be the one the token was
// verified under. Failures are never cached. Revocation is not the cache's business: callers
// check it on every use. A full cache evicts expired tokens, then the oldest stored.
type CachedVerifier struct {
	v       *Verifier
	entries *cache.Cache[[sha256.Size]byte, cached]
	gens    KeyGenerations // the key source's, when it has them
}

type cached struct {
	claims *Claims
	want   Expect
	gen    uint64
}

// KeyGenerations is implemented by a KeySource that can withdraw a key (a revoked kid).
// KeyGeneration changes whenever a key was withdrawn; a CachedVerifier then verifies
// each cached token again before trusting it.
type KeyGenerations interface {
	KeyGeneration() uint64
}

// NewCachedVerifier wraps v with a cache of at most maxEntries tokens (DefaultCacheEntries
// when maxEntries <= 0).
func NewCachedVerifier(v *Verifier, maxEntries int) *CachedVerifier {
	if maxEntries <= 0 {
		maxEntries = DefaultCacheEntries
	}
	now := v.Now
	if now == nil {
		now = time.Now
	}
	c := &CachedVerifier{v: v, entries: cache.New[[sha256.Size]byte, cached](maxEntries, 0, now)}
	c.gens, _ = v.Keys.(KeyGenerations)
	return c
}

// Verify is Verifier.Verify with the cache in front. The returned claims may be shared with
// other callers and must not be modified.
func (c *CachedVerifier) Verify(ctx context.Context, token string, want Expect) (*Claims, error) {
	if len(token) > MaxTokenSize {
		return nil, ErrTooLarge
	}
	key := tokenKey(token)
	var gen uint64
	if c.gens != nil {
		gen = c.gens.KeyGeneration()
	}
	e, ok := c.entries.Get(key)
	if ok && e.want == want && e.gen == gen {
		if err := c.v.checkTimes(e.claims); err != nil {
			c.entries.Delete(key)
			return nil, err
		}
		return e.claims, nil
	}
	claims, err := c.v.Verify(ctx, token, want)
	if err != nil {
		return nil, err
	}
	// Past exp plus the leeway the token no longer verifies: a full cache drops it first.
	until := time.Unix(claims.Expiry, 0).Add(EffectiveLeeway(c.v.Leeway))
	c.entries.SetUntil(key, cached{claims: claims, want: want, gen: gen}, until)
	return claims, nil
}

// tokenKey hashes the token through a stack buffer (tokens are at most MaxTokenSize, checked
// by the caller), so the hot path does not copy the token to the heap.
func tokenKey(token string) [sha256.Size]byte {
	var buf [MaxTokenSize]byte
	n := copy(buf[:], token)
	return sha256.Sum256(buf[:n])
}
