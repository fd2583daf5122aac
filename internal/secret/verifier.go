package secret

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/caracalgw/caracal/internal/cache"
)

// VerifierOptions configures a Verifier; zero values take the defaults.
type VerifierOptions struct {
	// MaxConcurrent bounds the Argon2 runs in flight (default GOMAXPROCS, at most 8): each holds
	// 64 MiB, and an unbounded number would let a burst of bad credentials exhaust memory.
	MaxConcurrent int
	// MaxPerKey bounds the checks running or waiting under one queue key (default 4); more are
	// refused with ErrKeyBusy.
	MaxPerKey int
	// MaxQueued bounds the checks waiting in all (default 256); more are refused with ErrBusy.
	MaxQueued int
	// MaxWait bounds how long a check waits for a slot (default 3s); past it the check is refused
	// with ErrBusy.
	MaxWait time.Duration
	// CacheTTL is how long a successful check is remembered (default 5 minutes).
	CacheTTL time.Duration
	// MaxEntries bounds the success cache (default 10000); a full cache forgets its oldest
	// successes first.
	MaxEntries int
	// DummyHash is a PHC string whose cost DummyCheck spends; empty means the cost of Hash.
	DummyHash string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks client secrets against stored hashes with bounded concurrency, a fair queue and a
// cache of recent successes. It is safe for concurrent use.
type Verifier struct {
	queue *queue
	// check is Check; tests wrap it to count and pace the real Argon2 runs.
	check func(phc, secret string) (bool, error)
	runs  atomic.Uint64
	// key makes cache keys unpredictable and meaningless outside this process.
	key [32]byte
	// dummyPHC has the cost of a real hash and matches nothing; DummyCheck runs it.
	dummyPHC string
	flight   singleflight.Group
	// cache holds the keys of recent successes.
	cache *cache.Cache[[sha256.Size]byte, struct{}]
}

// NewVerifier returns a Verifier. A DummyHash that does not parse is an error.
func NewVerifier(opts VerifierOptions) (*Verifier, error) {
	v := &Verifier{check: Check}
	n := opts.MaxConcurrent
	if n <= 0 {
		n = min(runtime.GOMAXPROCS(0), 8)
	}
	perKey, maxQueued, maxWait := opts.MaxPerKey, opts.MaxQueued, opts.MaxWait
	if perKey <= 0 {
		perKey = 4
	}
	if maxQueued <= 0 {
		maxQueued = 256
	}
	if maxWait <= 0 {
		maxWait = 3 * time.Second
	}
	v.queue = newQueue(n, perKey, maxQueued, maxWait)
	ttl, maxEntries := opts.CacheTTL, opts.MaxEntries
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	if maxEntries <= 0 {
		maxEntries = 10000
	}
	v.cache = cache.New[[sha256.Size]byte, struct{}](maxEntries, ttl, opts.Now)
	// crypto/rand.Read never fails on supported platforms (it crashes the program instead).
	_, _ = rand.Read(v.key[:])
	p := params{memory: hashMemory, time: hashTime, threads: hashThreads}
	keyLen := keySize
	if opts.DummyHash != "" {
		dp, _, dk, err := parse(opts.DummyHash)
		if err != nil {
			return nil, fmt.Errorf("dummy hash: %w", err)
		}
		p, keyLen = dp, len(dk)
	}
	salt, sum := make([]byte, saltSize), make([]byte, keyLen)
	_, _ = rand.Read(salt)
	_, _ = rand.Read(sum)
	v.dummyPHC = p.encode(salt, sum)
	return v, nil
}

// Runs reports how many Argon2 checks this Verifier has run, dummy checks included.
func (v *Verifier) Runs() uint64 { return v.runs.Load() }

// Cached reports whether this exact (zoneID, clientID, phc, secret) verified within the cache TTL.
func (v *Verifier) Cached(zoneID, clientID, phc, secret string) bool {
	return v.cached(v.cacheKey(zoneID, clientID, phc, secret))
}

// Request is one verification for Verify.
type Request struct {
	ZoneID, ClientID, PHC, Secret string
	// QueueKey groups the request inside its zone in the fair queue (for example the source address).
	QueueKey string
	// Admit, when set, is called before an Argon2 run starts on this caller's behalf, and not when
	// the answer comes from the cache or from an identical check already in flight; its error is
	// returned and no run starts.
	Admit func() error
}

// Verify checks req.Secret against req.PHC for (ZoneID, ClientID). A success is cached under a keyed
// hash of all four values, so the cache never holds the secret and a changed secret or hash misses.
// Identical checks in flight at once share one Argon2 run. Waiting for a slot honours ctx and the
// queue's bounds (ErrBusy, ErrKeyBusy).
func (v *Verifier) Verify(ctx context.Context, req Request) (bool, error) {
	k := v.cacheKey(req.ZoneID, req.ClientID, req.PHC, req.Secret)
	if v.cached(k) {
		return true, nil
	}
	res, err, _ := v.flight.Do(string(k[:]), func() (any, error) {
		// A caller that missed the cache just before an identical run stored its success, and
		// reached the flight just after that run left it, finds the success here instead of
		// starting a second run.
		if v.cached(k) {
			return true, nil
		}
		if req.Admit != nil {
			if err := req.Admit(); err != nil {
				return false, err
			}
		}
		if err := v.queue.acquire(ctx, req.ZoneID, req.QueueKey); err != nil {
			return false, err
		}
		ok, err := v.run(req.PHC, req.Secret)
		v.queue.release(req.ZoneID, req.QueueKey)
		if err != nil {
			return false, fmt.Errorf("verifying secret of client %q in zone %q: %w", req.ClientID, req.ZoneID, err)
		}
		if ok {
			v.store(k)
		}
		return ok, nil
	})
	return res.(bool), err
}

// DummyCheck burns the cost of a real check for a client that does not exist, so that response time
// does not reveal which client ids exist. It waits in the fair queue under (zoneID, queueKey) and
// returns the queue's error without running if it gets no slot.
func (v *Verifier) DummyCheck(ctx context.Context, zoneID, queueKey, secret string) error {
	if err := v.queue.acquire(ctx, zoneID, queueKey); err != nil {
		return err
	}
	defer v.queue.release(zoneID, queueKey)
	// The outcome is always false and is not needed; only the work matters.
	_, _ = v.run(v.dummyPHC, secret)
	return nil
}

func (v *Verifier) run(phc, secret string) (bool, error) {
	ok, err := v.check(phc, secret)
	if err == nil { // an error is a hash that did not parse, which runs nothing
		v.runs.Add(1)
	}
	return ok, err
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
	_, ok := v.cache.Get(k)
	return ok
}

func (v *Verifier) store(k [sha256.Size]byte) { v.cache.Set(k, struct{}{}) }
