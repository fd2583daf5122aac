package revocation

import (
	"context"
	"testing"
	"time"
)

func TestBus(t *testing.T) {
	ctx := context.Background()
	key := []byte("bus-key")

	t.Run("delivers every entry to every attached source", func(t *testing.T) {
		b := NewBus(time.Hour, nil)
		st1, st2 := NewRevokedSet(nil), NewRevokedSet(nil)
		var ep1, ep2 Epochs
		src1 := b.Attach(st1, &ep1, key)
		defer src1.Close()
		src2 := b.Attach(st2, &ep2, key)
		defer src2.Close()
		if err := b.Publish(ctx, StreamSessionsRevoke, signed(key, StreamSessionsRevoke, sessionEvent("z", "s1").Fields())); err != nil {
			t.Fatal(err)
		}
		ee := EpochEvent{ZoneID: "z", Epoch: 4, EdgeID: "e", Event: "create"}
		if err := b.Publish(ctx, StreamDelegationInvalidate, signed(key, StreamDelegationInvalidate, ee.Fields())); err != nil {
			t.Fatal(err)
		}
		for i, st := range []*RevokedSet{st1, st2} {
			if _, hit := st.Revoked("z", "s1"); !hit {
				t.Errorf("store %d missed the revocation", i+1)
			}
		}
		for i, ep := range []*Epochs{&ep1, &ep2} {
			if n, ok := ep.Current("z"); !ok || n != 4 {
				t.Errorf("epochs %d = %d, %v", i+1, n, ok)
			}
		}
		if s := src1.Stats(); s.Applied != 2 {
			t.Errorf("stats %+v", s)
		}
		if !src1.Watermark().IsZero() || src1.Lag() != 0 {
			t.Errorf("in-process source without a publisher reports Watermark %v, Lag %v", src1.Watermark(), src1.Lag())
		}
		wm := time.Now().Add(-time.Second).Truncate(time.Millisecond)
		hb := Heartbeat{Publisher: "relay-1", Watermark: wm, SentAt: wm.Add(time.Second)}
		if err := b.Publish(ctx, StreamSessionsRevoke, hb.SignedFields(key)); err != nil {
			t.Fatal(err)
		}
		for i, src := range []Source{src1, src2} {
			if got := src.Watermark(); !got.Equal(wm) {
				t.Errorf("source %d: Watermark = %v after a heartbeat with %v", i+1, got, wm)
			}
		}
		old := Heartbeat{Publisher: "relay-1", Watermark: wm.Add(-time.Minute), SentAt: wm}
		if err := b.Publish(ctx, StreamSessionsRevoke, old.SignedFields(key)); err != nil {
			t.Fatal(err)
		}
		if got := src1.Watermark(); !got.Equal(wm) {
			t.Errorf("an older heartbeat moved the watermark back to %v", got)
		}
		late := b.Attach(NewRevokedSet(nil), nil, key)
		defer late.Close()
		if got := late.Watermark(); !got.Equal(old.Watermark) {
			t.Errorf("a late source got Watermark %v, want the latest heartbeat's %v", got, old.Watermark)
		}
		if s := src1.Stats(); s.Applied != 2 || s.Heartbeats != 2 || !s.Synced {
			t.Errorf("stats after heartbeats %+v", s)
		}
	})

	t.Run("replays retained history to a late source and skips what retention dropped", func(t *testing.T) {
		c := newClock(t0)
		b := NewBus(time.Hour, c.now)
		old := Event{ZoneID: "z", SessionID: "old", RevokedAt: t0, ExpiresAt: t0.Add(48 * time.Hour)}
		if err := b.Publish(ctx, StreamSessionsRevoke, old.Fields()); err != nil {
			t.Fatal(err)
		}
		c.advance(50 * time.Minute)
		recent := Event{ZoneID: "z", SessionID: "recent", RevokedAt: c.now(), ExpiresAt: c.now().Add(48 * time.Hour)}
		if err := b.Publish(ctx, StreamSessionsRevoke, recent.Fields()); err != nil {
			t.Fatal(err)
		}
		c.advance(20 * time.Minute) // "old" is now 70 minutes old, beyond the retention

		st := NewRevokedSet(c.now)
		src := b.Attach(st, nil, nil)
		defer src.Close()
		if _, hit := st.Revoked("z", "recent"); !hit {
			t.Fatal("a late source missed a retained entry")
		}
		if _, hit := st.Revoked("z", "old"); hit {
			t.Fatal("an entry older than the retention was replayed")
		}
	})

	t.Run("drops unsigned, badly signed and malformed entries when a key is set", func(t *testing.T) {
		b := NewBus(0, nil)
		st := NewRevokedSet(nil)
		src := b.Attach(st, nil, key)
		defer src.Close()
		publish := func(f map[string]string) {
			t.Helper()
			if err := b.Publish(ctx, StreamSessionsRevoke, f); err != nil {
				t.Fatal(err)
			}
		}
		publish(sessionEvent("z", "unsigned").Fields())
		publish(signed([]byte("wrong"), StreamSessionsRevoke, sessionEvent("z", "wrong-key").Fields()))
		tampered := signed(key, StreamSessionsRevoke, sessionEvent("z", "original").Fields())
		tampered["session_id"] = "tampered"
		publish(tampered)
		malformed := sessionEvent("Bad Zone", "malformed").Fields()
		publish(signed(key, StreamSessionsRevoke, malformed))
		publish(signed(key, StreamSessionsRevoke, sessionEvent("z", "good").Fields()))

		if id, hit := st.Revoked("z", "unsigned", "wrong-key", "original", "tampered", "malformed"); hit {
			t.Fatalf("%s was applied", id)
		}
		if _, hit := st.Revoked("z", "good"); !hit {
			t.Fatal("the correctly signed entry was not applied")
		}
		if s := src.Stats(); s.BadSignature != 3 || s.Malformed != 1 || s.Applied != 1 {
			t.Fatalf("stats %+v", s)
		}
	})

	t.Run("ignores other streams on the same transport", func(t *testing.T) {
		b := NewBus(0, nil)
		src := b.Attach(NewRevokedSet(nil), nil, key)
		defer src.Close()
		if err := b.Publish(ctx, "caracal.policy.invalidate", map[string]string{"zone_id": "z"}); err != nil {
			t.Fatal(err)
		}
		if s := src.Stats(); s != (Stats{Synced: true}) {
			t.Fatalf("stats %+v", s)
		}
	})

	t.Run("stops delivering to a closed source", func(t *testing.T) {
		b := NewBus(0, nil)
		st := NewRevokedSet(nil)
		src := b.Attach(st, nil, nil)
		if err := src.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, StreamSessionsRevoke, sessionEvent("z", "s").Fields()); err != nil {
			t.Fatal(err)
		}
		if st.Len() != 0 {
			t.Fatal("a closed source received an entry")
		}
	})

	t.Run("refuses a cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := NewBus(0, nil).Publish(cctx, StreamSessionsRevoke, sessionEvent("z", "s").Fields()); err == nil {
			t.Fatal("published with a cancelled context")
		}
	})
}
