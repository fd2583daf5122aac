package mandate

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// keyServer is an STS stand-in on 127.0.0.1 serving RFC 8414 metadata and a JWKS for one zone.
type keyServer struct {
	srv    *httptest.Server
	issuer string

	mu           sync.Mutex
	keys         []*ecdsa.PublicKey
	cacheControl string
	jwksStatus   int
	metaIssuer   string
	jwksURI      string
	padding      int
	gate         chan struct{} // when set, the JWKS handler waits for it to close
	started      chan struct{} // when set, receives a value as each JWKS request starts

	metaFetches, jwksFetches atomic.Int32
}

func newKeyServer(t *testing.T, keys ...*ecdsa.PublicKey) *keyServer {
	t.Helper()
	ks := &keyServer{keys: keys, jwksStatus: http.StatusOK}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server/zones/zone-a", func(w http.ResponseWriter, r *http.Request) {
		ks.metaFetches.Add(1)
		ks.mu.Lock()
		meta := map[string]string{"issuer": ks.metaIssuer, "jwks_uri": ks.jwksURI}
		ks.mu.Unlock()
		_ = json.NewEncoder(w).Encode(meta)
	})
	mux.HandleFunc("GET /zones/zone-a/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		ks.jwksFetches.Add(1)
		ks.mu.Lock()
		gate, started := ks.gate, ks.started
		ks.mu.Unlock()
		if started != nil {
			started <- struct{}{}
		}
		if gate != nil {
			<-gate
		}
		ks.mu.Lock()
		defer ks.mu.Unlock()
		var doc JWKS
		for _, k := range ks.keys {
			jwk, err := PublicJWK(k)
			if err != nil {
				panic(err)
			}
			doc.Keys = append(doc.Keys, jwk)
		}
		if ks.cacheControl != "" {
			w.Header().Set("Cache-Control", ks.cacheControl)
		}
		w.WriteHeader(ks.jwksStatus)
		_ = json.NewEncoder(w).Encode(doc)
		_, _ = w.Write([]byte(strings.Repeat(" ", ks.padding)))
	})
	ks.srv = httptest.NewServer(mux)
	t.Cleanup(ks.srv.Close)
	ks.issuer = ks.srv.URL + "/zones/zone-a"
	ks.metaIssuer = ks.issuer
	ks.jwksURI = ks.issuer + "/jwks.json"
	return ks
}

func (ks *keyServer) set(f func(ks *keyServer)) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	f(ks)
}

func newRemote(t *testing.T, opts RemoteOptions) *RemoteKeys {
	t.Helper()
	r, err := NewRemoteKeys(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// settle waits for a background refresh, if one is running.
func settle(r *RemoteKeys) {
	r.mu.Lock()
	f := r.flight
	r.mu.Unlock()
	if f != nil {
		<-f.done
	}
}

func kidOf(t *testing.T, k *ecdsa.PrivateKey) string {
	t.Helper()
	kid, err := Thumbprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return kid
}

func TestRemoteKeysDiscoversAndCaches(t *testing.T) {
	k := mustKey(t)
	ks := newKeyServer(t, &k.PublicKey)
	clock := newFakeClock()
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: clock.Now})
	ctx := context.Background()

	got, err := r.Key(ctx, kidOf(t, k))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(&k.PublicKey) {
		t.Fatal("wrong key")
	}
	for range 3 {
		if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
			t.Fatal(err)
		}
	}
	settle(r)
	if m, j := ks.metaFetches.Load(), ks.jwksFetches.Load(); m != 1 || j != 1 {
		t.Fatalf("fetched metadata %d and jwks %d times, want once each", m, j)
	}
	if _, err := r.Key(ctx, "unknown"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown kid gave %v, want ErrUnknownKey", err)
	}
}

func TestRemoteKeysVerifiesMandates(t *testing.T) {
	f := newFixture(t)
	ks := newKeyServer(t, &f.priv.PublicKey)
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: f.clock.Now})
	v := &Verifier{Keys: r, Now: f.clock.Now}
	c := f.sessionClaims()
	c.Issuer, c.Audience = ks.issuer, ks.issuer
	want := Expect{Issuer: ks.issuer, ZoneID: testZone, Audience: ks.issuer, Use: UseSession}
	if _, err := v.Verify(context.Background(), f.sign(t, TypSession, c), want); err != nil {
		t.Fatal(err)
	}
}

func TestRemoteKeysRefusals(t *testing.T) {
	k := mustKey(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, ks *keyServer) RemoteOptions
	}{
		{"a redirected metadata request is not followed", func(t *testing.T, ks *keyServer) RemoteOptions {
			target := newKeyServer(t, &k.PublicKey)
			redirect := httptest.NewServer(http.RedirectHandler(target.srv.URL+"/.well-known/oauth-authorization-server/zones/zone-a", http.StatusFound))
			t.Cleanup(redirect.Close)
			t.Cleanup(func() {
				if n := target.metaFetches.Load(); n != 0 {
					t.Errorf("redirect target was fetched %d times", n)
				}
			})
			return RemoteOptions{Issuer: redirect.URL + "/zones/zone-a"}
		}},
		{"a redirected jwks request is not followed", func(t *testing.T, ks *keyServer) RemoteOptions {
			target := newKeyServer(t, &k.PublicKey)
			redirect := httptest.NewServer(http.RedirectHandler(target.jwksURI, http.StatusMovedPermanently))
			t.Cleanup(redirect.Close)
			ks.set(func(ks *keyServer) { ks.jwksURI = redirect.URL + "/jwks.json" })
			t.Cleanup(func() {
				if n := target.jwksFetches.Load(); n != 0 {
					t.Errorf("redirect target was fetched %d times", n)
				}
			})
			return RemoteOptions{Issuer: ks.issuer}
		}},
		{"an oversized key set is refused", func(t *testing.T, ks *keyServer) RemoteOptions {
			ks.set(func(ks *keyServer) { ks.padding = 2048 })
			return RemoteOptions{Issuer: ks.issuer, MaxBytes: 1024}
		}},
		{"metadata naming another issuer is refused", func(t *testing.T, ks *keyServer) RemoteOptions {
			ks.set(func(ks *keyServer) { ks.metaIssuer = ks.srv.URL + "/zones/zone-b" })
			return RemoteOptions{Issuer: ks.issuer}
		}},
		{"a clear-text jwks_uri off loopback is refused", func(t *testing.T, ks *keyServer) RemoteOptions {
			ks.set(func(ks *keyServer) { ks.jwksURI = "http://keys.example/jwks.json" })
			return RemoteOptions{Issuer: ks.issuer}
		}},
		{"a failing key set endpoint is reported", func(t *testing.T, ks *keyServer) RemoteOptions {
			ks.set(func(ks *keyServer) { ks.jwksStatus = http.StatusInternalServerError })
			return RemoteOptions{Issuer: ks.issuer}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ks := newKeyServer(t, &k.PublicKey)
			r := newRemote(t, tt.setup(t, ks))
			_, err := r.Key(context.Background(), kidOf(t, k))
			if !errors.Is(err, ErrKeysUnavailable) {
				t.Fatalf("Key gave %v, want ErrKeysUnavailable", err)
			}
			if err := r.Refresh(context.Background()); err == nil {
				t.Fatal("Refresh succeeded")
			}
		})
	}
}

func TestRemoteKeysSingleFlight(t *testing.T) {
	k := mustKey(t)
	ks := newKeyServer(t, &k.PublicKey)
	gate, started := make(chan struct{}), make(chan struct{}, 1)
	ks.set(func(ks *keyServer) { ks.gate, ks.started = gate, started })
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: newFakeClock().Now})

	const callers = 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			got, err := r.Key(context.Background(), kidOf(t, k))
			if err == nil && !got.Equal(&k.PublicKey) {
				err = errors.New("wrong key")
			}
			errs <- err
		})
	}
	<-started
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := ks.jwksFetches.Load(); n != 1 {
		t.Fatalf("%d concurrent misses made %d fetches, want 1", callers, n)
	}
}

func TestRemoteKeysMissesRefetchAtMostOncePerMinRefresh(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t)
	ks := newKeyServer(t, &k1.PublicKey)
	clock := newFakeClock()
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: clock.Now, MinRefresh: 30 * time.Second})
	ctx := context.Background()

	if _, err := r.Key(ctx, kidOf(t, k1)); err != nil {
		t.Fatal(err)
	}
	// The zone rotates to k2: the first miss refetches only once MinRefresh has passed.
	ks.set(func(ks *keyServer) { ks.keys = append(ks.keys, &k2.PublicKey) })
	for _, step := range []time.Duration{0, 10 * time.Second, 19 * time.Second} {
		clock.Advance(step)
		if _, err := r.Key(ctx, kidOf(t, k2)); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("miss inside MinRefresh gave %v, want ErrUnknownKey", err)
		}
		if n := ks.jwksFetches.Load(); n != 1 {
			t.Fatalf("miss inside MinRefresh fetched: %d fetches", n)
		}
	}
	clock.Advance(time.Second)
	got, err := r.Key(ctx, kidOf(t, k2))
	if err != nil {
		t.Fatalf("miss after MinRefresh: %v", err)
	}
	if !got.Equal(&k2.PublicKey) {
		t.Fatal("wrong key after rotation")
	}
	if n := ks.jwksFetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// A kid that never exists still costs at most one fetch per interval.
	for range 5 {
		_, _ = r.Key(ctx, "never")
	}
	if n := ks.jwksFetches.Load(); n != 2 {
		t.Fatalf("misses right after a fetch fetched again: %d fetches", n)
	}
}

func TestRemoteKeysKeepsTheLastGoodSet(t *testing.T) {
	k := mustKey(t)
	ks := newKeyServer(t, &k.PublicKey)
	clock := newFakeClock()
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: clock.Now, MaxAge: time.Minute})
	ctx := context.Background()
	if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
		t.Fatal(err)
	}

	for _, broken := range []func(ks *keyServer){
		func(ks *keyServer) { ks.jwksStatus = http.StatusServiceUnavailable },
		func(ks *keyServer) { ks.jwksStatus, ks.keys = http.StatusOK, nil }, // an empty set is not a set
		func(ks *keyServer) { ks.srv.Close() },
	} {
		ks.set(broken)
		clock.Advance(2 * time.Minute)
		// The stale set answers at once and refreshes in the background; the refresh fails.
		if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
			t.Fatalf("stale known kid: %v", err)
		}
		settle(r)
		if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
			t.Fatalf("known kid after a failed refresh: %v", err)
		}
		if err := r.Refresh(ctx); err == nil {
			t.Fatal("Refresh against a broken server succeeded")
		}
		if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
			t.Fatalf("known kid after a failed Refresh: %v", err)
		}
		if _, err := r.Key(ctx, "other"); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown kid with a last good set gave %v, want ErrUnknownKey", err)
		}
	}
}

func TestRemoteKeysHonoursCacheControlWithinBounds(t *testing.T) {
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"public, max-age=120", 120 * time.Second},
		{"max-age=5", 30 * time.Second},
		{"public, max-age=86400", time.Hour},
		{"max-age=99999999999999999999", time.Hour},
		{"no-store", 30 * time.Second},
		{"max-age=oops", 30 * time.Second},
		{"max-age=-5", 30 * time.Second},
		{"", 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run("Cache-Control "+tt.header, func(t *testing.T) {
			k := mustKey(t)
			ks := newKeyServer(t, &k.PublicKey)
			ks.set(func(ks *keyServer) { ks.cacheControl = tt.header })
			clock := newFakeClock()
			r := newRemote(t, RemoteOptions{Issuer: ks.issuer, Now: clock.Now})
			ctx := context.Background()
			if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
				t.Fatal(err)
			}

			clock.Advance(tt.want - time.Second)
			if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
				t.Fatal(err)
			}
			settle(r)
			if n := ks.jwksFetches.Load(); n != 1 {
				t.Fatalf("refetched before max-age: %d fetches", n)
			}

			clock.Advance(time.Second)
			if _, err := r.Key(ctx, kidOf(t, k)); err != nil {
				t.Fatal(err)
			}
			settle(r)
			if n := ks.jwksFetches.Load(); n != 2 {
				t.Fatalf("no refetch once max-age passed: %d fetches", n)
			}
		})
	}
}

func TestRemoteKeysWaitHonoursContext(t *testing.T) {
	k := mustKey(t)
	ks := newKeyServer(t, &k.PublicKey)
	gate, started := make(chan struct{}), make(chan struct{}, 1)
	ks.set(func(ks *keyServer) { ks.gate, ks.started = gate, started })
	r := newRemote(t, RemoteOptions{Issuer: ks.issuer})

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := r.Key(ctx, kidOf(t, k))
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait gave %v", err)
	}
	// The abandoned fetch still completes for everybody else.
	close(gate)
	settle(r)
	if _, err := r.Key(context.Background(), kidOf(t, k)); err != nil {
		t.Fatal(err)
	}
	if n := ks.jwksFetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

func TestNewRemoteKeysValidatesOptions(t *testing.T) {
	for name, opts := range map[string]RemoteOptions{
		"an http issuer off loopback": {Issuer: "http://sts.example/zones/a"},
		"a relative issuer":           {Issuer: "/zones/a"},
		"an ftp issuer":               {Issuer: "ftp://sts.example/zones/a"},
		"an issuer with a query":      {Issuer: "https://sts.example/zones/a?x=1"},
		"an issuer with user info":    {Issuer: "https://u:p@sts.example/zones/a"},
		"max age below min refresh":   {Issuer: "https://sts.example/zones/a", MinRefresh: time.Hour, MaxAge: time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewRemoteKeys(opts); err == nil {
				t.Fatal("NewRemoteKeys accepted it")
			}
		})
	}
	r, err := NewRemoteKeys(RemoteOptions{Issuer: "https://sts.example/base/zones/a/"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://sts.example/.well-known/oauth-authorization-server/base/zones/a"; r.metadataURL != want {
		t.Fatalf("metadata URL = %s, want %s", r.metadataURL, want)
	}
	for _, loop := range []string{"http://127.0.0.1:8080/zones/a", "http://[::1]/zones/a", "http://localhost/zones/a"} {
		if _, err := NewRemoteKeys(RemoteOptions{Issuer: loop}); err != nil {
			t.Fatalf("loopback issuer %s refused: %v", loop, err)
		}
	}
}
