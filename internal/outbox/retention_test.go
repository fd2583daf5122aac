package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/outbox"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

func TestRetentionDeletesWhatIsOldAndKeepsWhatIsLive(t *testing.T) {
	s := openPostgres(t)
	ctx := context.Background()
	now := time.Now()
	session := func(id string, expires time.Duration) {
		t.Helper()
		if err := s.CreateSession(ctx, store.Session{ZoneID: zone, ID: id, ClientID: "agent", CreatedAt: now, ExpiresAt: now.Add(expires)}); err != nil {
			t.Fatal(err)
		}
	}
	edge := func(id, src, dst, parent string) {
		t.Helper()
		if _, err := s.CreateEdge(ctx, store.Edge{ZoneID: zone, ID: id, SourceSessionID: src, TargetSessionID: dst, ParentEdgeID: parent,
			Resource: "https://api.example/", Scopes: []string{"read"}, ExpiresAt: now.Add(time.Hour), MaxHops: 2, CreatedAt: now}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateResource(ctx, store.Resource{ZoneID: zone, ID: "r1", Identifier: "https://api.example/", Scopes: []string{"read"}}); err != nil {
		t.Fatal(err)
	}
	session("old-a", time.Hour)
	session("old-b", time.Hour)
	session("old-c", time.Hour)
	session("live", 72*time.Hour)
	session("held-1", time.Hour)
	session("held-2", time.Hour)
	edge("e-root", "old-a", "old-b", "")
	edge("e-child", "old-b", "old-c", "e-root")
	edge("e-revoked", "held-1", "held-2", "")
	for _, sid := range []string{"old-a", "live"} {
		if _, err := s.RevokeSession(ctx, zone, sid, "gone", now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeEdge(ctx, zone, "e-revoked", "x", now); err != nil {
		t.Fatal(err)
	}
	// Expired by time when the purge runs, but still active (never swept): it and its
	// sessions stay.
	session("held-3", time.Hour)
	edge("e-live", "held-1", "held-3", "")

	rows := pending(t, s)
	for _, row := range rows[:len(rows)-1] {
		if err := s.MarkPublished(ctx, row.ZoneID, row.ID, now); err != nil {
			t.Fatal(err)
		}
	}
	recent := rows[len(rows)-1]
	clock := testenv.NewClock(now.Add(48 * time.Hour))
	if err := s.MarkPublished(ctx, recent.ZoneID, recent.ID, now.Add(30*time.Hour)); err != nil {
		t.Fatal(err)
	}
	stuck, err := s.AppendOutbox(ctx, store.OutboxEvent{ZoneID: zone, Stream: revocation.StreamPolicyInvalidate, CreatedAt: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := outbox.NewRetention(outbox.RetentionOptions{Store: s, Horizon: -time.Hour}); err == nil {
		t.Fatal("a negative horizon was accepted")
	}
	r, err := outbox.NewRetention(outbox.RetentionOptions{Store: s, Horizon: 24 * time.Hour, Batch: 1, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Purge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.OutboxRows != len(rows)-1 {
		t.Fatalf("%d outbox rows deleted, want %d", p.OutboxRows, len(rows)-1)
	}
	// e-child, e-root, e-revoked, then old-a, old-b, old-c, held-2.
	if p.Records != 7 {
		t.Fatalf("%d sessions and edges deleted, want 7", p.Records)
	}
	for _, id := range []string{"e-root", "e-child", "e-revoked"} {
		if _, err := s.GetEdge(ctx, zone, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("edge %s: %v, want it purged", id, err)
		}
	}
	if _, err := s.GetEdge(ctx, zone, "e-live"); err != nil {
		t.Errorf("the active edge was purged: %v", err)
	}
	left, err := s.Sessions(ctx, zone, []string{"old-a", "old-b", "old-c", "live", "held-1", "held-2", "held-3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 3 || left["live"].ID == "" || left["held-1"].ID == "" || left["held-3"].ID == "" {
		t.Fatalf("sessions left: %v; want live, held-1 and held-3", left)
	}
	if err := s.MarkAttempt(ctx, zone, recent.ID); err != nil {
		t.Fatalf("the recently published row was purged: %v", err)
	}
	if got := pending(t, s); len(got) != 1 || got[0].ID != stuck.ID {
		t.Fatalf("pending rows after the purge: %v; want the unpublished one only", got)
	}
	again, err := r.Purge(ctx)
	if err != nil || again != (outbox.Purged{}) {
		t.Fatalf("second purge: %+v, %v; want nothing left to delete", again, err)
	}
}

func TestRetentionRunPurgesAtStartAndOnSchedule(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	clock := testenv.NewClock(time.Now())
	r, err := outbox.NewRetention(outbox.RetentionOptions{Store: s, Interval: 10 * time.Millisecond, Horizon: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	published := func(sid string) int64 {
		revokeSession(t, s, sid, "logout")
		rows := pending(t, s)
		if err := s.MarkPublished(ctx, zone, rows[0].ID, clock.Now()); err != nil {
			t.Fatal(err)
		}
		return rows[0].ID
	}
	gone := func(id int64) func() bool {
		return func() bool { return errors.Is(s.MarkAttempt(ctx, zone, id), store.ErrNotFound) }
	}
	first := published("ses-1")
	clock.Advance(2 * time.Hour)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		r.Run(runCtx)
		close(done)
	}()
	defer func() {
		cancel()
		waitClosed(t, "Run to return after cancel", done)
	}()
	waitFor(t, "the purge at start", gone(first))
	second := published("ses-2")
	if gone(second)() {
		t.Fatal("a row published within the horizon was purged")
	}
	clock.Advance(2 * time.Hour)
	waitFor(t, "a scheduled purge", gone(second))
}
