package mandate

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// fetchLog records what OnFetch reported.
type fetchLog struct {
	mu      sync.Mutex
	causes  []string
	retries []time.Duration
}

func (l *fetchLog) observe(err error, retryIn time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.causes = append(l.causes, "ok")
	} else {
		l.causes = append(l.causes, FetchCause(err))
	}
	l.retries = append(l.retries, retryIn)
}

func (l *fetchLog) snapshot() ([]string, []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.causes...), append([]time.Duration(nil), l.retries...)
}

func TestRemoteKeysRetriesAFailedFetchWithBackoff(t *testing.T) {
	k := mustKey(t)
	ks := newKeyServer(t, &k.PublicKey)
	ks.set(func(ks *keyServer) { ks.jwksStatus = http.StatusServiceUnavailable })
	clock := newFakeClock()
	var log fetchLog
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: clock.Now, OnFetch: log.observe})
	ctx := context.Background()
	kid := kidOf(t, k)

	// Each failure doubles the delay before the next attempt, from 1 s up to MinRefresh.
	wantRetries := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, wait := range wantRetries {
		if _, err := r.Key(ctx, kid); !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("attempt %d: %v, want ErrKeysUnavailable", i+1, err)
		}
		settle(r)
		fetches := ks.jwksFetches.Load()
		// Before the delay is over, no new fetch starts.
		clock.Advance(wait - time.Millisecond)
		if _, err := r.Key(ctx, kid); !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("attempt %d, during the backoff: %v", i+1, err)
		}
		settle(r)
		if got := ks.jwksFetches.Load(); got != fetches {
			t.Fatalf("attempt %d: a fetch ran %s into a %s backoff", i+1, wait-time.Millisecond, wait)
		}
		clock.Advance(time.Millisecond)
	}
	causes, retries := log.snapshot()
	for i, c := range causes {
		if c != "status" {
			t.Fatalf("fetch %d reported cause %q, want status", i+1, c)
		}
	}
	for i, want := range wantRetries {
		if retries[i] != want {
			t.Fatalf("fetch %d reported a retry in %s, want %s", i+1, retries[i], want)
		}
	}

	// The STS recovers: the next attempt after the backoff succeeds, and the unknown-kid
	// limit of MinRefresh applies from then on.
	ks.set(func(ks *keyServer) { ks.jwksStatus = http.StatusOK })
	if _, err := r.Key(ctx, kid); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	fetches := ks.jwksFetches.Load()
	clock.Advance(2 * time.Second)
	if _, err := r.Key(ctx, "unknown"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown kid after recovery: %v", err)
	}
	settle(r)
	if got := ks.jwksFetches.Load(); got != fetches {
		t.Fatalf("an unknown kid 2 s after a successful fetch fetched again (%d fetches, want %d)", got, fetches)
	}
	if causes, _ := log.snapshot(); causes[len(causes)-1] != "ok" {
		t.Fatalf("last fetch reported %q, want ok", causes[len(causes)-1])
	}
}

func TestRemoteKeysNamesTheCauseOfAFailedFetch(t *testing.T) {
	// A port nobody listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("not json")) }))
	defer garbage.Close()

	for _, tc := range []struct{ name, issuer, want string }{
		{"refused", closed + "/zones/zone-a", "refused"},
		{"untrusted certificate", tlsSrv.URL + "/zones/zone-a", "x509"},
		{"status", notFound.URL + "/zones/zone-a", "status"},
		{"body", garbage.URL + "/zones/zone-a", "body"},
		{"dns", "https://caracal-remote-test.invalid/zones/zone-a", "dns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRemote(t, RemoteOptions{Issuer: tc.issuer})
			err := r.Refresh(context.Background())
			if got := FetchCause(err); got != tc.want {
				t.Fatalf("cause of %v = %q, want %q", err, got, tc.want)
			}
		})
	}
}

func TestRemoteKeysRevokeRefusesAKidAtOnce(t *testing.T) {
	old, next := mustKey(t), mustKey(t)
	ks := newKeyServer(t, &old.PublicKey)
	clock := newFakeClock()
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: clock.Now})
	ctx := context.Background()
	if _, err := r.Key(ctx, kidOf(t, old)); err != nil {
		t.Fatal(err)
	}
	gen := r.KeyGeneration()
	// The server still publishes the old key (a stale cache on the way): revoked stays revoked.
	ks.set(func(ks *keyServer) { ks.keys = append(ks.keys, &next.PublicKey) })
	r.Revoke(kidOf(t, old))
	if _, err := r.Key(ctx, kidOf(t, old)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("revoked kid: %v, want ErrUnknownKey", err)
	}
	if r.KeyGeneration() == gen {
		t.Fatal("revoking a known kid did not change the key generation")
	}
	settle(r)
	if _, err := r.Key(ctx, kidOf(t, next)); err != nil {
		t.Fatalf("the next key, fetched by the revocation: %v", err)
	}
	if _, err := r.Key(ctx, kidOf(t, old)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("revoked kid after a refetch that still lists it: %v", err)
	}
}

func TestRemoteKeysRefetchIgnoresMinRefresh(t *testing.T) {
	old, next := mustKey(t), mustKey(t)
	ks := newKeyServer(t, &old.PublicKey)
	clock := newFakeClock()
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: clock.Now})
	ctx := context.Background()
	if _, err := r.Key(ctx, kidOf(t, old)); err != nil {
		t.Fatal(err)
	}
	ks.set(func(ks *keyServer) { ks.keys = append(ks.keys, &next.PublicKey) })
	r.Refetch()
	settle(r)
	if _, err := r.Key(ctx, kidOf(t, next)); err != nil {
		t.Fatalf("next key right after Refetch: %v", err)
	}
}

func TestCachedVerifierReverifiesAfterAKeyIsWithdrawn(t *testing.T) {
	f := newFixture(t)
	ks := newKeyServer(t, &f.priv.PublicKey)
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: f.clock.Now})
	tok := f.sign(t, TypSession, f.sessionClaims())
	cv := NewCachedVerifier(&Verifier{Keys: r, Now: f.clock.Now}, 0)
	if _, err := cv.Verify(context.Background(), tok, sessionExpect); err != nil {
		t.Fatal(err)
	}
	r.Revoke(f.signer.KID())
	if _, err := cv.Verify(context.Background(), tok, sessionExpect); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("cached token of a revoked key: %v, want ErrUnknownKey", err)
	}
}

func TestRemoteKeysPrefetchRetriesUntilTheIssuerAnswers(t *testing.T) {
	k := mustKey(t)
	ks := newKeyServer(t, &k.PublicKey)
	ks.set(func(ks *keyServer) { ks.jwksStatus = http.StatusBadGateway })
	var log fetchLog
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Retry: 5 * time.Millisecond, OnFetch: func(err error, retryIn time.Duration) {
		log.observe(err, retryIn)
		if causes, _ := log.snapshot(); len(causes) == 3 {
			ks.set(func(ks *keyServer) { ks.jwksStatus = http.StatusOK })
		}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r.Prefetch(ctx)
	if ctx.Err() != nil {
		t.Fatal("Prefetch gave up before the issuer answered")
	}
	if _, err := r.Key(context.Background(), kidOf(t, k)); err != nil {
		t.Fatalf("key after Prefetch: %v", err)
	}
	causes, _ := log.snapshot()
	want := []string{"status", "status", "status", "ok"}
	if len(causes) != len(want) {
		t.Fatalf("fetch outcomes %v, want %v", causes, want)
	}
	for i := range want {
		if causes[i] != want[i] {
			t.Fatalf("fetch outcomes %v, want %v", causes, want)
		}
	}
}
