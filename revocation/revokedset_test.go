package revocation

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func TestRevokedSetRevoked(t *testing.T) {
	s := NewRevokedSet(newClock(t0).now)
	s.Add(Event{ZoneID: "z1", SessionID: "s1", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	s.Add(Event{ZoneID: "z1", DelegationEdgeID: "e1", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})

	cases := []struct {
		name string
		zone string
		ids  []string
		want string
		hit  bool
	}{
		{"a revoked session", "z1", []string{"s1"}, "s1", true},
		{"a revoked edge among other ids", "z1", []string{"s2", "root", "e1"}, "e1", true},
		{"the first revoked id when several are", "z1", []string{"e1", "s1"}, "e1", true},
		{"empty ids skipped", "z1", []string{"", "s1"}, "s1", true},
		{"an id revoked only in another zone", "z2", []string{"s1", "e1"}, "", false},
		{"ids never revoked", "z1", []string{"s2", "e2"}, "", false},
		{"no ids", "z1", nil, "", false},
	}
	for _, tc := range cases {
		t.Run("reports "+tc.name, func(t *testing.T) {
			got, hit := s.Revoked(tc.zone, tc.ids...)
			if got != tc.want || hit != tc.hit {
				t.Fatalf("Revoked(%q, %q) = %q, %v; want %q, %v", tc.zone, tc.ids, got, hit, tc.want, tc.hit)
			}
		})
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
}

func TestRevokedSetExpiry(t *testing.T) {
	t.Run("keeps an entry until ExpiresAt plus the grace, then sweeps it", func(t *testing.T) {
		c := newClock(t0)
		s := NewRevokedSet(c.now)
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		c.set(t0.Add(time.Hour + ExpiryGrace - time.Nanosecond))
		s.Sweep()
		if _, hit := s.Revoked("z", "s"); !hit {
			t.Fatal("swept before ExpiresAt + ExpiryGrace")
		}
		c.advance(time.Nanosecond)
		s.Sweep()
		if _, hit := s.Revoked("z", "s"); hit || s.Len() != 0 {
			t.Fatalf("still held after expiry (Len %d)", s.Len())
		}
	})
	t.Run("sweeps expired entries on Add", func(t *testing.T) {
		c := newClock(t0)
		s := NewRevokedSet(c.now)
		s.Add(Event{ZoneID: "z", SessionID: "old", RevokedAt: t0, ExpiresAt: t0.Add(time.Minute)})
		c.advance(time.Hour)
		s.Add(Event{ZoneID: "z", SessionID: "new", RevokedAt: c.now(), ExpiresAt: c.now().Add(time.Minute)})
		if _, hit := s.Revoked("z", "old"); hit || s.Len() != 1 {
			t.Fatalf("expired entry kept (Len %d)", s.Len())
		}
	})
	t.Run("ignores an event that is already irrelevant", func(t *testing.T) {
		c := newClock(t0)
		s := NewRevokedSet(c.now)
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0.Add(-2 * time.Hour), ExpiresAt: t0.Add(-time.Hour)})
		if s.Len() != 0 {
			t.Fatal("an expired event was stored")
		}
	})
	t.Run("keeps the later expiry when an anchor is revoked again", func(t *testing.T) {
		c := newClock(t0)
		s := NewRevokedSet(c.now)
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0, ExpiresAt: t0.Add(time.Minute)})
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0, ExpiresAt: t0.Add(time.Minute)})
		c.set(t0.Add(30 * time.Minute))
		s.Sweep()
		if _, hit := s.Revoked("z", "s"); !hit {
			t.Fatal("the shorter, older expiry removed the entry")
		}
		c.set(t0.Add(time.Hour + ExpiryGrace))
		s.Sweep()
		if _, hit := s.Revoked("z", "s"); hit {
			t.Fatal("kept past the longest expiry")
		}
	})
	t.Run("keeps an event without ExpiresAt", func(t *testing.T) {
		c := newClock(t0)
		s := NewRevokedSet(c.now)
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0})
		c.advance(24 * 365 * time.Hour)
		s.Sweep()
		if _, hit := s.Revoked("z", "s"); !hit {
			t.Fatal("an event without expiry was dropped")
		}
	})
	t.Run("does not grow on replays of the same entry", func(t *testing.T) {
		s := NewRevokedSet(newClock(t0).now)
		e := Event{ZoneID: "z", SessionID: "s", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		for range 100 {
			s.Add(e)
		}
		if len(s.expiry) != 1 {
			t.Fatalf("expiry heap holds %d items for one entry", len(s.expiry))
		}
	})
}

func TestRevokedSetWatch(t *testing.T) {
	t.Run("fires at once for an already revoked id", func(t *testing.T) {
		s := NewRevokedSet(newClock(t0).now)
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		ch, cancel := s.Watch("z", []string{"other", "s"})
		defer cancel()
		select {
		case <-ch:
		default:
			t.Fatal("watch on a revoked id is not closed")
		}
	})
	t.Run("fires when a watched id is revoked later, not for others", func(t *testing.T) {
		s := NewRevokedSet(newClock(t0).now)
		ch, cancel := s.Watch("z", []string{"s", "e"})
		defer cancel()
		s.Add(Event{ZoneID: "z", SessionID: "unrelated", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		s.Add(Event{ZoneID: "other-zone", DelegationEdgeID: "e", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		select {
		case <-ch:
			t.Fatal("fired for an id it does not watch")
		default:
		}
		s.Add(Event{ZoneID: "z", DelegationEdgeID: "e", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		select {
		case <-ch:
		default:
			t.Fatal("not fired after the watched edge was revoked")
		}
		// The second watched id firing later must not close the channel twice.
		s.Add(Event{ZoneID: "z", SessionID: "s", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		if len(s.watchers) != 0 {
			t.Fatalf("%d watcher sets left after firing", len(s.watchers))
		}
	})
	t.Run("wakes a goroutine blocked on the channel", func(t *testing.T) {
		s := NewRevokedSet(nil)
		ch, cancel := s.Watch("z", []string{"s"})
		defer cancel()
		done := make(chan struct{})
		go func() {
			<-ch
			close(done)
		}()
		s.Add(sessionEvent("z", "s"))
		waitClosed(t, "the watcher goroutine to wake", done)
	})
	t.Run("releases a cancelled watch", func(t *testing.T) {
		s := NewRevokedSet(newClock(t0).now)
		ch, cancel := s.Watch("z", []string{"a", "b"})
		cancel()
		cancel()
		if len(s.watchers) != 0 {
			t.Fatalf("%d watcher sets left after cancel", len(s.watchers))
		}
		s.Add(Event{ZoneID: "z", SessionID: "a", RevokedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		select {
		case <-ch:
			t.Fatal("a cancelled watch fired")
		default:
		}
	})
}

func TestRevokedSetIsSafeForConcurrentUse(t *testing.T) {
	s := NewRevokedSet(nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("s%d-%d", w, i)
				ch, cancel := s.Watch("z", []string{id})
				s.Add(sessionEvent("z", id))
				<-ch
				cancel()
				if _, hit := s.Revoked("z", "x", id); !hit {
					t.Errorf("%s not revoked after Add", id)
				}
				s.Sweep()
			}
		})
	}
	wg.Wait()
	if s.Len() != 800 {
		t.Fatalf("Len = %d, want 800", s.Len())
	}
}

func TestRevokedDoesNotAllocate(t *testing.T) {
	s := NewRevokedSet(nil)
	for i := range 1000 {
		s.Add(sessionEvent("z", fmt.Sprintf("s%d", i)))
	}
	sid, root, edge := "s999", "s0", "e1"
	allocs := testing.AllocsPerRun(1000, func() {
		if _, hit := s.Revoked("z", sid, root, edge); !hit {
			t.Fatal("miss")
		}
		if _, hit := s.Revoked("z", "nope", "", "nada"); hit {
			t.Fatal("hit")
		}
	})
	if allocs != 0 {
		t.Fatalf("Revoked allocates %.1f times per call", allocs)
	}
}

func TestEpochs(t *testing.T) {
	var e Epochs
	if _, ok := e.Current("z"); ok {
		t.Fatal("an epoch for a zone never seen")
	}
	for _, n := range []int64{3, 7, 5, 7} {
		e.Observe(EpochEvent{ZoneID: "z", Epoch: n, EdgeID: "e", Event: "create"})
	}
	e.Observe(EpochEvent{ZoneID: "other", Epoch: 100, EdgeID: "e", Event: "revoke"})
	if n, ok := e.Current("z"); !ok || n != 7 {
		t.Fatalf("Current = %d, %v; want 7 (epochs never move back)", n, ok)
	}
}
