package secret

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// counting wraps the verifier's real Check to count Argon2 runs and track how many overlap.
type counting struct {
	runs, inFlight, maxInFlight atomic.Int32
	hold                        chan struct{} // when non-nil, each run waits for it to close
	entered                     chan struct{} // when non-nil, signalled as each run starts
	started                     chan string   // when non-nil, gets each run's secret as it starts
}

func (c *counting) install(v *Verifier) {
	v.check = func(phc, secret string) (bool, error) {
		c.runs.Add(1)
		n := c.inFlight.Add(1)
		defer c.inFlight.Add(-1)
		for {
			m := c.maxInFlight.Load()
			if n <= m || c.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		if c.entered != nil {
			c.entered <- struct{}{}
		}
		if c.started != nil {
			c.started <- secret
		}
		if c.hold != nil {
			<-c.hold
		}
		return Check(phc, secret)
	}
}

func newTestVerifier(opts VerifierOptions) (*Verifier, *counting, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	v, err := NewVerifier(opts)
	if err != nil {
		panic(err)
	}
	c := &counting{}
	c.install(v)
	return v, c, clock
}

func TestVerifierCachesSuccesses(t *testing.T) {
	v, c, clock := newTestVerifier(VerifierOptions{CacheTTL: time.Minute})
	ctx := context.Background()
	phc := cheapPHC("pw", 64, 1, 1)

	for i := range 3 {
		ok, err := v.Verify(ctx, Request{ZoneID: "zone-a", ClientID: "app", PHC: phc, Secret: "pw"})
		if err != nil || !ok {
			t.Fatalf("Verify #%d = %v, %v", i, ok, err)
		}
	}
	if n := c.runs.Load(); n != 1 {
		t.Fatalf("three successes ran Argon2 %d times, want 1", n)
	}

	clock.Advance(time.Minute)
	if ok, err := v.Verify(ctx, Request{ZoneID: "zone-a", ClientID: "app", PHC: phc, Secret: "pw"}); err != nil || !ok {
		t.Fatalf("Verify after TTL = %v, %v", ok, err)
	}
	if n := c.runs.Load(); n != 2 {
		t.Fatalf("an expired success was served from the cache (%d runs)", n)
	}
}

func TestVerifierCacheMissesOnAnyChange(t *testing.T) {
	v, c, _ := newTestVerifier(VerifierOptions{})
	ctx := context.Background()
	phc := cheapPHC("pw", 64, 1, 1)
	if ok, err := v.Verify(ctx, Request{ZoneID: "zone-a", ClientID: "app", PHC: phc, Secret: "pw"}); err != nil || !ok {
		t.Fatalf("Verify = %v, %v", ok, err)
	}

	tests := []struct {
		name                      string
		zone, client, phc, secret string
		want                      bool
	}{
		{"a wrong secret fails", "zone-a", "app", phc, "pw2", false},
		{"a new hash of another secret fails the old secret", "zone-a", "app", cheapPHC("new", 64, 1, 1), "pw", false},
		{"the same secret under a new hash is checked again", "zone-a", "app", cheapPHC("pw", 72, 1, 1), "pw", true},
		{"another client id is checked again", "zone-a", "app2", phc, "pw", true},
		{"another zone is checked again", "zone-b", "app", phc, "pw", true},
		{"a shifted boundary between fields is checked again", "zone-aa", "pp", phc, "pw", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.runs.Load()
			ok, err := v.Verify(ctx, Request{ZoneID: tt.zone, ClientID: tt.client, PHC: tt.phc, Secret: tt.secret})
			if err != nil || ok != tt.want {
				t.Fatalf("Verify = %v, %v; want %v", ok, err, tt.want)
			}
			if c.runs.Load() != before+1 {
				t.Fatal("answer came from the cache")
			}
		})
	}
	// Failures are never cached: the wrong secret costs a full check every time.
	before := c.runs.Load()
	for range 2 {
		if ok, _ := v.Verify(ctx, Request{ZoneID: "zone-a", ClientID: "app", PHC: phc, Secret: "pw2"}); ok {
			t.Fatal("wrong secret accepted")
		}
	}
	if c.runs.Load() != before+2 {
		t.Fatal("a failure was cached")
	}
}

func TestVerifierCacheHoldsNoSecret(t *testing.T) {
	v, _, _ := newTestVerifier(VerifierOptions{})
	phc := cheapPHC("pw-that-is-long-enough-to-find", 64, 1, 1)
	if ok, err := v.Verify(context.Background(), Request{ZoneID: "zone-a", ClientID: "app", PHC: phc, Secret: "pw-that-is-long-enough-to-find"}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	other, err := NewVerifier(VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k1 := v.cacheKey("zone-a", "app", phc, "pw-that-is-long-enough-to-find")
	if k2 := other.cacheKey("zone-a", "app", phc, "pw-that-is-long-enough-to-find"); k1 == k2 {
		t.Fatal("cache keys do not depend on a per-verifier key")
	}
	if _, ok := v.cache.Get(k1); !ok || v.cache.Len() != 1 {
		t.Fatalf("cache holds %d entries, want exactly the keyed hash", v.cache.Len())
	}
}

func TestVerifierBoundsTheCache(t *testing.T) {
	v, c, clock := newTestVerifier(VerifierOptions{MaxEntries: 3, CacheTTL: time.Minute})
	phc := cheapPHC("pw", 64, 1, 1)
	clients := []string{"a", "b", "c", "d", "e"}
	for _, client := range clients {
		if ok, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: client, PHC: phc, Secret: "pw"}); err != nil || !ok {
			t.Fatal(ok, err)
		}
		clock.Advance(time.Second)
		if n := v.cache.Len(); n > 3 {
			t.Fatalf("cache grew to %d entries, bound 3", n)
		}
	}
	// A full cache forgot its oldest successes only: the three newest cost no Argon2 run.
	before := c.runs.Load()
	for _, client := range clients[2:] {
		if !v.Cached("z", client, phc, "pw") {
			t.Fatalf("client %s was evicted, though newer than the two forgotten", client)
		}
	}
	if v.Cached("z", "a", phc, "pw") || c.runs.Load() != before {
		t.Fatal("the oldest success is still cached, or a cached check ran Argon2")
	}
}

func TestVerifierBoundsConcurrentChecks(t *testing.T) {
	for _, limit := range []int{1, 2} {
		v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: limit})
		phc := cheapPHC("pw", 64, 1, 1)
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Go(func() {
				// Distinct clients so that nothing is served from the cache.
				if ok, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: string(rune('a' + i)), QueueKey: string(rune('a' + i)), PHC: phc, Secret: "pw"}); err != nil || !ok {
					t.Error(ok, err)
				}
			})
		}
		wg.Go(func() { _ = v.DummyCheck(context.Background(), "z", "dummy", "pw") })
		wg.Wait()
		if got := c.maxInFlight.Load(); got > int32(limit) {
			t.Fatalf("limit %d: %d checks ran at once", limit, got)
		}
		if got := c.runs.Load(); got != 13 {
			t.Fatalf("limit %d: %d checks ran, want 13", limit, got)
		}
	}
}

func TestVerifierWaitHonoursContext(t *testing.T) {
	v, c, _ := newTestVerifier(VerifierOptions{MaxConcurrent: 1})
	c.hold, c.entered = make(chan struct{}), make(chan struct{}, 1)
	phc := cheapPHC("pw", 64, 1, 1)

	held := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "first", PHC: phc, Secret: "pw"})
		held <- err
	}()
	<-c.entered // the only slot is now taken

	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, Request{ZoneID: "z", ClientID: "second", PHC: phc, Secret: "pw"})
		waiting <- err
	}()
	dummy := make(chan struct{})
	go func() {
		_ = v.DummyCheck(ctx, "z", "dummy", "pw")
		close(dummy)
	}()
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait gave %v", err)
	}
	<-dummy
	if n := c.runs.Load(); n != 1 {
		t.Fatalf("%d checks ran, want only the one holding the slot", n)
	}
	close(c.hold)
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}

func TestDummyCheckRunsAFullCostCheck(t *testing.T) {
	v, c, _ := newTestVerifier(VerifierOptions{})
	if err := v.DummyCheck(context.Background(), "z", "k", "anything"); err != nil {
		t.Fatal(err)
	}
	if n := c.runs.Load(); n != 1 {
		t.Fatalf("DummyCheck ran %d checks, want 1", n)
	}
	p, _, key, err := parse(v.dummyPHC)
	if err != nil {
		t.Fatal(err)
	}
	if p.memory != 65536 || p.time != 3 || p.threads != 4 || len(key) != 32 {
		t.Fatalf("dummy hash %s does not cost what a real hash costs", v.dummyPHC)
	}
}

func TestVerifierReportsMalformedHashes(t *testing.T) {
	v, _, _ := newTestVerifier(VerifierOptions{})
	ok, err := v.Verify(context.Background(), Request{ZoneID: "z", ClientID: "app", PHC: "$argon2id$v=19$m=1,t=1,p=1$x$y", Secret: "pw"})
	if err == nil || ok {
		t.Fatalf("Verify(malformed) = %v, %v", ok, err)
	}
}

// TestIdenticalChecksInFlightShareOneRun: checks of the same credentials that arrive while
// one is running wait for its answer instead of paying for an Argon2 run each; those that
// arrive after it find the cached success. Either way one run answers them all.
func TestIdenticalChecksInFlightShareOneRun(t *testing.T) {
	const callers = 8
	v, c, _ := newTestVerifier(VerifierOptions{MaxPerKey: 64})
	// room for a signal from every caller, so that a second run is counted, not blocked
	c.hold, c.entered = make(chan struct{}), make(chan struct{}, callers)
	phc := cheapPHC("pw", 64, 1, 1)
	req := Request{ZoneID: "z", ClientID: "app", PHC: phc, Secret: "pw"}
	var wg, calling sync.WaitGroup
	calling.Add(callers)
	for range callers {
		wg.Go(func() {
			calling.Done()
			if ok, err := v.Verify(context.Background(), req); err != nil || !ok {
				t.Error(ok, err)
			}
		})
	}
	<-c.entered // the first run has started and is held
	calling.Wait()
	close(c.hold)
	wg.Wait()
	if got := c.runs.Load(); got != 1 {
		t.Fatalf("%d Argon2 runs for %d identical checks, want 1", got, callers)
	}
}
