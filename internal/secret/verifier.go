package secret

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// VerifierOptions configures a Verifier; zero values take the defaults.
type VerifierOptions struct {
	// MaxConcurrent bounds the Argon2 runs in flight (default 2): each holds 64 MiB, and an
	// unbounded number would let a burst of bad credentials exhaust memory.
	MaxConcurrent int
	// CacheTTL is how long a successful check is remembered (default 5 minutes).
	CacheTTL time.Duration
	// MaxEntries bounds the success cache (default 10000).
	MaxEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks client secrets against stored hashes with bounded concurrency and a cache of
// recent successes. It is safe for concurrent use.
type Verifier struct {
	slots      chan struct{}
	ttl        time.Duration
	maxEntries int
	now        func() time.Time
	// check is Check; tests wrap it to count and pace the real Argon2 runs.
	check func(phc, secret string) (bool, error)
	// key makes cache keys unpredictable and meaningless outside this process.
	key [32]byte
	// dummyPHC has the cost of a real hash and matches nothing; DummyCheck runs it.
	dummyPHC string

	mu    sync.Mutex
	cache map[[sha256.Size]byte]time.Time // cache key -> expiry
}

// NewVerifier returns a Verifier.
func NewVerifier(opts VerifierOptions) *Verifier {
	v := &Verifier{
		ttl:        opts.CacheTTL,
		maxEntries: opts.MaxEntries,
		now:        opts.Now,
		check:      Check,
		cache:      map[[sha256.Size]byte]time.Time{},
	}
	n := opts.MaxConcurrent
	if n <= 0 {
		n = 2
	}
	v.slots = make(chan struct{}, n)
	if v.ttl <= 0 {
		v.ttl = 5 * time.Minute
	}
	if v.maxEntries <= 0 {
		v.maxEntries = 10000
	}
	if v.now == nil {
		v.now = time.Now
	}
	// crypto/rand.Read never fails on supported platforms (it crashes the program instead).
	_, _ = rand.Read(v.key[:])
	salt, sum := make([]byte, saltSize), make([]byte, keySize)
	_, _ = rand.Read(salt)
	_, _ = rand.Read(sum)
	v.dummyPHC = params{memory: hashMemory, time: hashTime, threads: hashThreads}.encode(salt, sum)
	return v
}

// Verify checks secret against phc for (zoneID, clientID). A success is cached under a keyed hash of
// all four values, so the cache never holds the secret and a changed secret or hash misses. Waiting
// for a verification slot honours ctx.
func (v *Verifier) Verify(ctx context.Context, zoneID, clientID, phc, secret string) (bool, error) {
	k := v.cacheKey(zoneID, clientID, phc, secret)
	if v.cached(k) {
		return true, nil
	}
	if err := v.acquire(ctx); err != nil {
		return false, err
	}
	ok, err := v.check(phc, secret)
	<-v.slots
	if err != nil {
		return false, fmt.Errorf("verifying secret of client %q in zone %q: %w", clientID, zoneID, err)
	}
	if ok {
		v.store(k)
	}
	return ok, nil
}

// DummyCheck burns the cost of a real check for a client that does not exist, so that response time
// does not reveal which client ids exist. It returns early only if ctx ends while waiting for a slot.
func (v *Verifier) DummyCheck(ctx context.Context, secret string) {
	if err := v.acquire(ctx); err != nil {
		return
	}
	defer func() { <-v.slots }()
	// The outcome is always false and is not needed; only the work matters.
	_, _ = v.check(v.dummyPHC, secret)
}

func (v *Verifier) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for a secret verification slot: %w", err)
	}
	select {
	case v.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a secret verification slot: %w", ctx.Err())
	}
}

// cacheKey is HMAC-SHA256 under the per-process key of the length-prefixed values, so that no two
// different tuples share a key.
func (v *Verifier) cacheKey(zoneID, clientID, phc, secret string) [sha256.Size]byte {
	m := hmac.New(sha256.New, v.key[:])
	var n [4]byte
	for _, s := range []string{zoneID, clientID, phc, secret} {
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}

func (v *Verifier) cached(k [sha256.Size]byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	exp, ok := v.cache[k]
	if !ok {
		return false
	}
	if !v.now().Before(exp) {
		delete(v.cache, k)
		return false
	}
	return true
}

func (v *Verifier) store(k [sha256.Size]byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if _, ok := v.cache[k]; !ok && len(v.cache) >= v.maxEntries {
		for ek, exp := range v.cache {
			if !now.Before(exp) {
				delete(v.cache, ek)
			}
		}
		// Still full: drop entries in map order, which is as good as random; an evicted client
		// just pays for one more Argon2 run.
		for ek := range v.cache {
			if len(v.cache) < v.maxEntries {
				break
			}
			delete(v.cache, ek)
		}
	}
	v.cache[k] = now.Add(v.ttl)
}
