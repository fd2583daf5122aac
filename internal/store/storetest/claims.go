package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// appendRows appends n policy-invalidation rows to zone, created at at.
func appendRows(t *testing.T, s store.Store, zone string, n int, at time.Time) []store.OutboxEvent {
	t.Helper()
	out := make([]store.OutboxEvent, n)
	for i := range out {
		e, err := s.AppendOutbox(t.Context(), store.OutboxEvent{ZoneID: zone, Stream: revocation.StreamPolicyInvalidate,
			Fields: map[string]string{"zone_id": zone, "n": fmt.Sprint(i)}, CreatedAt: at})
		must(t, err, "AppendOutbox")
		out[i] = e
	}
	return out
}

func outboxIDs(rows []store.OutboxEvent) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

func testClaimConcurrent(t *testing.T, s store.Store) {
	createZone(t, s, "a")
	createZone(t, s, "b")
	rows := appendRows(t, s, "a", 30, base)
	rows = append(rows, appendRows(t, s, "b", 20, base)...)

	// Each claimer publishes (records) what it claimed and marks it published before
	// claiming again, like a relay. Recording happens while the claim is held, so the
	// record is the order of publication.
	var (
		mu        sync.Mutex
		published []int64
		wg        sync.WaitGroup
		errs      = make(chan error, 8)
	)
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("relay-%d", c)
			for {
				got, err := s.ClaimOutbox(t.Context(), owner, 3, time.Hour)
				if errors.Is(err, store.ErrClaimed) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				published = append(published, outboxIDs(got)...)
				mu.Unlock()
				for _, e := range got {
					if err := s.MarkPublished(t.Context(), e.ZoneID, e.ID, base); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("claiming: %v", err)
	}
	equal(t, published, outboxIDs(rows), "rows in publication order, each exactly once")
}

func testClaimLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	rows := appendRows(t, s, "a", 3, base)

	t.Run("bad arguments are refused and claim nothing", func(t *testing.T) {
		for _, c := range []struct {
			owner string
			limit int
			lease time.Duration
		}{{"", 1, time.Hour}, {"x", 0, time.Hour}, {"x", 1, 0}, {"x", 1, -time.Second}} {
			if _, err := s.ClaimOutbox(ctx, c.owner, c.limit, c.lease); err == nil {
				t.Errorf("ClaimOutbox(%q, %d, %s) accepted", c.owner, c.limit, c.lease)
			}
		}
	})
	t.Run("a lapsed lease is picked up by another relay", func(t *testing.T) {
		got, err := s.ClaimOutbox(ctx, "dead", 1, time.Millisecond)
		must(t, err, "ClaimOutbox")
		equal(t, outboxIDs(got), outboxIDs(rows[:1]), "first claim")
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err = s.ClaimOutbox(ctx, "live", 10, time.Hour)
			if err == nil {
				break
			}
			wantErr(t, err, store.ErrClaimed, "claim while the lease runs")
			if time.Now().After(deadline) {
				t.Fatal("the lapsed lease was never released")
			}
			time.Sleep(time.Millisecond)
		}
		equal(t, got, rows, "rows claimed after the lapse")
	})
	t.Run("a live lease blocks others but not its owner", func(t *testing.T) {
		_, err := s.ClaimOutbox(ctx, "other", 10, time.Hour)
		wantErr(t, err, store.ErrClaimed, "claim of another owner")
		got, err := s.ClaimOutbox(ctx, "live", 2, time.Hour)
		must(t, err, "renewing")
		equal(t, got, rows[:2], "renewed rows")
	})
	t.Run("published rows are never claimed and free the outbox", func(t *testing.T) {
		for _, e := range rows {
			must(t, s.MarkPublished(ctx, e.ZoneID, e.ID, base), "MarkPublished")
		}
		got, err := s.ClaimOutbox(ctx, "other", 10, time.Hour)
		must(t, err, "ClaimOutbox")
		equal(t, len(got), 0, "claimed rows")
		more := appendRows(t, s, "a", 1, base)
		got, err = s.ClaimOutbox(ctx, "other", 10, time.Hour)
		must(t, err, "ClaimOutbox")
		equal(t, got, more, "new row claimed by another relay")
		all, err := s.PendingOutbox(ctx, 10)
		must(t, err, "PendingOutbox")
		equal(t, all, more, "claimed rows are still pending")
	})
}

func testOutboxWatermark(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	near := func(what string, got time.Time) {
		t.Helper()
		if d := time.Since(got); d < -time.Minute || d > time.Minute {
			t.Fatalf("%s = %v, want about now (%v)", what, got, time.Now())
		}
	}
	w, err := s.OutboxWatermark(ctx)
	must(t, err, "OutboxWatermark")
	near("watermark of an empty outbox", w)
	b, err := s.OutboxBacklog(ctx)
	must(t, err, "OutboxBacklog")
	near("backlog clock", b.Now)
	if b.Pending != 0 || !b.Oldest.IsZero() {
		t.Fatalf("empty backlog = %+v", b)
	}

	old := time.Now().Add(-time.Hour)
	first := appendRows(t, s, "a", 1, old)[0]
	appendRows(t, s, "a", 1, old.Add(time.Minute))
	appendRows(t, s, "a", 1, time.Now().Add(time.Hour)) // created "in the future"
	_, err = s.ClaimOutbox(ctx, "relay", 1, time.Hour)
	must(t, err, "ClaimOutbox")
	w, err = s.OutboxWatermark(ctx)
	must(t, err, "OutboxWatermark")
	equal(t, w, norm(old), "watermark held by the oldest pending row, claimed")
	b, err = s.OutboxBacklog(ctx)
	must(t, err, "OutboxBacklog")
	equal(t, []any{b.Pending, b.Oldest}, []any{3, norm(old)}, "backlog")

	must(t, s.MarkPublished(ctx, "a", first.ID, time.Now()), "MarkPublished")
	w, err = s.OutboxWatermark(ctx)
	must(t, err, "OutboxWatermark")
	equal(t, w, norm(old.Add(time.Minute)), "watermark after the oldest was published")
}

func testPurgeOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	rows := appendRows(t, s, "a", 5, base)
	for i, e := range rows[:4] {
		must(t, s.MarkPublished(ctx, "a", e.ID, base.Add(time.Duration(i)*time.Hour)), "MarkPublished")
	}
	_, err := s.PurgeOutbox(ctx, base, 0)
	if err == nil {
		t.Fatal("PurgeOutbox accepted a zero limit")
	}
	// Published at base, +1h, +2h, +3h; the last row is unpublished.
	n, err := s.PurgeOutbox(ctx, base.Add(150*time.Minute), 2)
	must(t, err, "PurgeOutbox")
	equal(t, n, 2, "rows deleted by a limited batch")
	n, err = s.PurgeOutbox(ctx, base.Add(150*time.Minute), 10)
	must(t, err, "PurgeOutbox")
	equal(t, n, 1, "rows deleted by the next batch")
	n, err = s.PurgeOutbox(ctx, base.Add(1000*time.Hour), 10)
	must(t, err, "PurgeOutbox")
	equal(t, n, 1, "rows deleted with a late cutoff")
	all, err := s.PendingOutbox(ctx, 10)
	must(t, err, "PendingOutbox")
	equal(t, all, rows[4:], "the unpublished row stays")
	wantErr(t, s.MarkPublished(ctx, "a", rows[0].ID, base), store.ErrNotFound, "a purged row")
}

func testLiveRevocations(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Sessions expire at base+1h.
	graphZone(t, s, "a", "s1", "s2", "s3", "s4")
	graphZone(t, s, "b", "s1")
	createEdge(t, s, edge("a", "e1", "s1", "s2", "", time.Second))
	e2 := createEdge(t, s, edge("a", "e2", "s2", "s3", "e1", 2*time.Second))
	createEdge(t, s, edge("a", "e3", "s3", "s4", "", 3*time.Second))
	createEdge(t, s, edge("a", "e4", "s1", "s4", "", -2*time.Hour)) // expired
	_, _, err := s.ExpireEdges(ctx, "a", base)
	must(t, err, "ExpireEdges")
	at := base.Add(time.Minute)
	_, err = s.RevokeEdge(ctx, "a", "e2", "edge gone", at)
	must(t, err, "RevokeEdge")
	_, err = s.RevokeSession(ctx, "a", "s4", "s4 gone", at) // cascades to e3
	must(t, err, "RevokeSession")
	_, err = s.RevokeSession(ctx, "a", "s3", "s3 gone", at) // e2 already revoked
	must(t, err, "RevokeSession")
	_, err = s.RevokeSession(ctx, "b", "s1", "other zone", at)
	must(t, err, "RevokeSession")
	grace := 5 * time.Minute

	sess := func(id, reason string) store.LiveRevocation {
		return store.LiveRevocation{ZoneID: "a", SessionID: id, Reason: reason, RevokedAt: norm(at), ExpiresAt: norm(base.Add(time.Hour))}
	}
	edg := func(id string, expires time.Time) store.LiveRevocation {
		return store.LiveRevocation{ZoneID: "a", EdgeID: id, RevokedAt: norm(at), ExpiresAt: norm(expires)}
	}
	want := []store.LiveRevocation{sess("s3", "s3 gone"), sess("s4", "s4 gone"), edg("e2", e2.ExpiresAt), edg("e3", base.Add(3*time.Second+time.Hour))}

	t.Run("revoked sessions then revoked edges, by id, page by page", func(t *testing.T) {
		for _, limit := range []int{1, 2, 3, 10} {
			var got []store.LiveRevocation
			var cur store.RevocationCursor
			for range 10 {
				page, err := s.LiveRevocations(ctx, "a", at, grace, cur, limit)
				must(t, err, "LiveRevocations")
				got = append(got, page...)
				if len(page) < limit {
					break
				}
				cur = page[len(page)-1].Cursor()
			}
			equal(t, got, want, fmt.Sprintf("live revocations in pages of %d", limit))
		}
	})
	t.Run("a revocation stays live until its expiry plus the grace", func(t *testing.T) {
		last := base.Add(time.Hour + grace - time.Microsecond)
		got, err := s.LiveRevocations(ctx, "a", last, grace, store.RevocationCursor{}, 10)
		must(t, err, "LiveRevocations")
		equal(t, got, want, "just before the sessions' expiry plus grace")
		got, err = s.LiveRevocations(ctx, "a", base.Add(time.Hour+grace), grace, store.RevocationCursor{}, 10)
		must(t, err, "LiveRevocations")
		equal(t, got, want[2:], "at the sessions' expiry plus grace")
	})
	t.Run("other zones and bad arguments", func(t *testing.T) {
		got, err := s.LiveRevocations(ctx, "b", at, grace, store.RevocationCursor{}, 10)
		must(t, err, "LiveRevocations")
		equal(t, len(got), 1, "zone b's revocations")
		got, err = s.LiveRevocations(ctx, "nope", at, grace, store.RevocationCursor{}, 10)
		must(t, err, "LiveRevocations")
		equal(t, len(got), 0, "revocations of a missing zone")
		if _, err := s.LiveRevocations(ctx, "a", at, grace, store.RevocationCursor{}, 0); err == nil {
			t.Error("a zero limit was accepted")
		}
		if _, err := s.LiveRevocations(ctx, "a", at, -time.Second, store.RevocationCursor{}, 1); err == nil {
			t.Error("a negative grace was accepted")
		}
	})
	t.Run("fields republish the revocation", func(t *testing.T) {
		equal(t, want[0].Fields(), revocation.Event{ZoneID: "a", SessionID: "s3", Reason: "s3 gone", RevokedAt: at, ExpiresAt: base.Add(time.Hour)}.Fields(), "session fields")
		equal(t, want[2].Fields(), revocation.Event{ZoneID: "a", DelegationEdgeID: "e2", Reason: "", RevokedAt: at, ExpiresAt: e2.ExpiresAt}.Fields(), "edge fields")
	})
}

func testPurgeExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	// s1..s4 expire at base+1h; s5 lives longer.
	graphZone(t, s, "a", "s1", "s2", "s3", "s4")
	must(t, s.CreateSession(ctx, store.Session{ZoneID: "a", ID: "s5", ClientID: clientID, CreatedAt: base, ExpiresAt: base.Add(10 * time.Hour)}), "CreateSession")
	graphZone(t, s, "b", "s1")
	createEdge(t, s, edge("a", "e1", "s1", "s2", "", time.Second))
	createEdge(t, s, edge("a", "e2", "s2", "s3", "e1", 2*time.Second))
	createEdge(t, s, edge("a", "e3", "s2", "s3", "e2", 3*time.Second))
	createEdge(t, s, edge("a", "e4", "s4", "s5", "", 4*time.Second)) // stays active
	_, err := s.RevokeEdge(ctx, "a", "e1", "done", base.Add(time.Minute))
	must(t, err, "RevokeEdge")

	t.Run("nothing before its expiry, and bad arguments change nothing", func(t *testing.T) {
		n, err := s.PurgeExpired(ctx, "a", base.Add(time.Hour), 100)
		must(t, err, "PurgeExpired")
		equal(t, n, 0, "records deleted before expiry")
		_, err = s.PurgeExpired(ctx, "a", base.Add(100*time.Hour), 0)
		if err == nil {
			t.Fatal("a zero limit was accepted")
		}
		_, err = s.PurgeExpired(ctx, "nope", base.Add(100*time.Hour), 10)
		wantErr(t, err, store.ErrNotFound, "missing zone")
	})
	t.Run("leaves go first, referenced records stay", func(t *testing.T) {
		cutoff := base.Add(3 * time.Hour)
		var total int
		for range 20 {
			n, err := s.PurgeExpired(ctx, "a", cutoff, 1)
			must(t, err, "PurgeExpired")
			if n == 0 {
				break
			}
			equal(t, n, 1, "records deleted by a batch of one")
			total += n
		}
		// e3, e2, e1 (leaf first), then s1, s2, s3; e4 is active so s4 and s5 stay.
		equal(t, total, 6, "records deleted")
		for _, id := range []string{"e1", "e2", "e3"} {
			_, err := s.GetEdge(ctx, "a", id)
			wantErr(t, err, store.ErrNotFound, "purged edge "+id)
		}
		_, err := s.GetEdge(ctx, "a", "e4")
		must(t, err, "the active edge stays")
		got, err := s.Sessions(ctx, "a", []string{"s1", "s2", "s3", "s4", "s5"})
		must(t, err, "Sessions")
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		equal(t, keys, []string{"s4", "s5"}, "sessions left")
		_, err = s.GetSession(ctx, "b", "s1")
		must(t, err, "another zone's session stays")
	})
}
