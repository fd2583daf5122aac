package issuer

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/revocation"
)

// staticSource is a revocation feed whose watermark the test sets.
type staticSource struct{ last time.Time }

func (s *staticSource) Watermark() time.Time    { return s.last }
func (s *staticSource) Lag() time.Duration      { return 0 }
func (s *staticSource) Stats() revocation.Stats { return revocation.Stats{} }
func (s *staticSource) Close() error            { return nil }

func TestSessionStateThroughTheRevocationPipeline(t *testing.T) {
	var rs *revocation.RevokedSet
	src := &staticSource{}
	e := newEnv(t, nil, func(o *Options) {
		rs = revocation.NewRevokedSet(o.Now)
		o.Revocations, o.RevocationSource = rs, src
	})
	src.last = e.clock.Now()
	ctx := context.Background()
	exchange := func(tok string) int {
		return e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(tok, "scope", "read")}).Code
	}

	t.Run("a session revoked by another process is refused once its event arrives", func(t *testing.T) {
		tok := e.session("demo", "agent")
		if code := exchange(tok); code != http.StatusOK {
			t.Fatalf("first exchange: %d", code)
		}
		rev, err := e.store.RevokeSession(ctx, "demo", claimsOf(t, tok).SID, "elsewhere", e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		rs.Add(revocation.Event{ZoneID: "demo", SessionID: rev.Session.ID, RevokedAt: e.clock.Now(), ExpiresAt: rev.Session.ExpiresAt})
		if code := exchange(tok); code != http.StatusBadRequest {
			t.Fatalf("exchange after the revocation event: %d", code)
		}
	})
	t.Run("without the event the cached row is re-read after the refresh interval", func(t *testing.T) {
		tok := e.session("demo", "agent")
		if code := exchange(tok); code != http.StatusOK {
			t.Fatalf("first exchange: %d", code)
		}
		if _, err := e.store.RevokeSession(ctx, "demo", claimsOf(t, tok).SID, "elsewhere", e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(DefaultRefreshInterval)
		src.last = e.clock.Now()
		if code := exchange(tok); code != http.StatusBadRequest {
			t.Fatalf("exchange after the refresh interval: %d", code)
		}
	})
	t.Run("a stale pipeline sends every exchange to storage", func(t *testing.T) {
		tok := e.session("demo", "agent")
		if code := exchange(tok); code != http.StatusOK {
			t.Fatalf("first exchange: %d", code)
		}
		if _, err := e.store.RevokeSession(ctx, "demo", claimsOf(t, tok).SID, "elsewhere", e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		src.last = e.clock.Now().Add(-time.Minute)
		if code := exchange(tok); code != http.StatusBadRequest {
			t.Fatalf("exchange with a stale pipeline: %d", code)
		}
		src.last = e.clock.Now()
	})
	t.Run("a self-revocation is refused at once in this process", func(t *testing.T) {
		tok := e.session("demo", "agent")
		if code := exchange(tok); code != http.StatusOK {
			t.Fatalf("first exchange: %d", code)
		}
		if rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {tok}}}); rec.Code != http.StatusOK {
			t.Fatal(rec.Code)
		}
		if code := exchange(tok); code != http.StatusBadRequest {
			t.Fatalf("exchange after self-revocation: %d", code)
		}
	})
}

// zoneReads counts GetZone calls and, while hold is set, keeps them waiting.
type zoneReads struct {
	store.Store
	n       atomic.Int32
	hold    chan struct{}
	entered chan struct{}
}

func (z *zoneReads) GetZone(ctx context.Context, zoneID string) (store.Zone, error) {
	z.n.Add(1)
	if z.hold != nil {
		select {
		case z.entered <- struct{}{}:
		default:
		}
		<-z.hold
	}
	return z.Store.GetZone(ctx, zoneID)
}

// TestConcurrentFirstRequestsShareOneZoneLoad: requests for a zone whose state is not
// loaded, arriving while its load runs, wait for that load instead of reading storage
// each; those that come after it find the loaded state.
func TestConcurrentFirstRequestsShareOneZoneLoad(t *testing.T) {
	zr := &zoneReads{Store: memory.New()}
	e := newEnv(t, zr)
	e.svc.Invalidate("demo")
	zr.n.Store(0)
	zr.hold, zr.entered = make(chan struct{}), make(chan struct{}, 1)
	const callers = 8
	var wg, calling sync.WaitGroup
	calling.Add(callers)
	for range callers {
		wg.Go(func() {
			calling.Done()
			if _, err := e.svc.zone(context.Background(), "demo"); err != nil {
				t.Error(err)
			}
		})
	}
	<-zr.entered // the first load is reading the zone, held
	calling.Wait()
	close(zr.hold)
	wg.Wait()
	if got := zr.n.Load(); got != 1 {
		t.Fatalf("%d zone reads for %d first requests, want 1", got, callers)
	}
}
