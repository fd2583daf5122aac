package issuer

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/caracalgw/caracal/revocation"
)

// staticSource is a revocation feed whose watermark the test sets.
type staticSource struct{ last time.Time }

func (s *staticSource) Watermark() time.Time    { return s.last }
func (s *staticSource) Lag() time.Duration      { return 0 }
func (s *staticSource) Stats() revocation.Stats { return revocation.Stats{} }
func (s *staticSource) Close() error            { return nil }

func TestSessionStateThroughTheRevocationPipeline(t *testing.T) {
	var rs *revocation.Store
	src := &staticSource{}
	e := newEnv(t, nil, func(o *Options) {
		rs = revocation.NewStore(o.Now)
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
