package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// rotateAt is a rotation whose next key signs at once, the replaced one retiring until.
func rotateAt(now, until time.Time) store.KeyRotation {
	return store.KeyRotation{Now: now, ActivateAt: now, RetireUntil: until}
}

// kidStatus lists keys as kid/status, in the store's order.
func kidStatus(keys []store.SigningKey) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k.KID+"/"+k.Status)
	}
	return out
}

func signerAt(t *testing.T, s store.Store, zoneID string, at time.Time) string {
	t.Helper()
	keys, err := s.SigningKeys(t.Context(), zoneID, at)
	must(t, err, "SigningKeys")
	k, ok := store.SigningKeyAt(keys, at)
	if !ok {
		t.Fatalf("no signing key at %s among %v", at, kidStatus(keys))
	}
	return k.KID
}

func testKeyRotationModes(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	now := base.Add(time.Hour)
	activate := now.Add(6 * time.Minute)
	until := activate.Add(time.Hour)

	t.Run("a delayed rotation publishes the next key and keeps signing with the current one", func(t *testing.T) {
		must(t, s.RotateSigningKey(ctx, "a", key("k-a2"), store.KeyRotation{Now: now, ActivateAt: activate, RetireUntil: until}), "RotateSigningKey")
		keys, err := s.SigningKeys(ctx, "a", now)
		must(t, err, "SigningKeys")
		equal(t, kidStatus(keys), []string{"k-a2/active", "k-a/retired"}, "keys during the delay")
		equal(t, keys[0].ActivatesAt, norm(activate), "activation of the next key")
		equal(t, keys[1].RetiredAt, norm(activate), "retirement of the current key")
		equal(t, keys[1].NotAfter, norm(until), "NotAfter of the current key")
		equal(t, signerAt(t, s, "a", now), "k-a", "signer during the delay")
		equal(t, signerAt(t, s, "a", activate.Add(-time.Millisecond)), "k-a", "signer just before activation")
		equal(t, signerAt(t, s, "a", activate), "k-a2", "signer at activation")
	})
	t.Run("another delayed rotation conflicts while one is pending", func(t *testing.T) {
		wantErr(t, s.RotateSigningKey(ctx, "a", key("k-a3"), store.KeyRotation{Now: now.Add(time.Minute), ActivateAt: activate.Add(time.Minute), RetireUntil: until}),
			store.ErrConflict, "RotateSigningKey during a pending rotation")
		wantErr(t, s.RotateSigningKey(ctx, "a", key("k-a3"), rotateAt(now.Add(time.Minute), until)),
			store.ErrConflict, "immediate rotation without revocation during a pending rotation")
		keys, err := s.SigningKeys(ctx, "a", now)
		must(t, err, "SigningKeys")
		equal(t, kidStatus(keys), []string{"k-a2/active", "k-a/retired"}, "keys after the refused rotations")
	})
	t.Run("an emergency rotation revokes the signing key and the pending one at once", func(t *testing.T) {
		at := now.Add(2 * time.Minute)
		ev := &store.OutboxEvent{Stream: revocation.StreamKeys, Fields: map[string]string{"zone_id": "a", "kid": "k-a3"}}
		must(t, s.RotateSigningKey(ctx, "a", key("k-a3"), store.KeyRotation{Now: at, ActivateAt: at, RetireUntil: until, Revoke: true, Outbox: ev}), "emergency RotateSigningKey")
		keys, err := s.SigningKeys(ctx, "a", at)
		must(t, err, "SigningKeys")
		equal(t, kidStatus(keys), []string{"k-a3/active"}, "keys after the emergency rotation")
		equal(t, keys[0].ActivatesAt.IsZero(), true, "the emergency key signs at once")
		equal(t, signerAt(t, s, "a", at), "k-a3", "signer after the emergency rotation")
		rows, err := s.PendingOutbox(ctx, 100)
		must(t, err, "PendingOutbox")
		var found bool
		for _, r := range rows {
			if r.Stream == revocation.StreamKeys && r.ZoneID == "a" && r.Fields["kid"] == "k-a3" {
				found = true
			}
		}
		equal(t, found, true, "the rotation's outbox row was written")
	})
	t.Run("an emergency rotation of a signing key leaves older retired keys published", func(t *testing.T) {
		at := now.Add(3 * time.Minute)
		must(t, s.RotateSigningKey(ctx, "a", key("k-a4"), rotateAt(at, until)), "RotateSigningKey")
		must(t, s.RotateSigningKey(ctx, "a", key("k-a5"), store.KeyRotation{Now: at.Add(time.Second), ActivateAt: at.Add(time.Second), RetireUntil: until, Revoke: true}), "emergency RotateSigningKey")
		keys, err := s.SigningKeys(ctx, "a", at.Add(time.Second))
		must(t, err, "SigningKeys")
		equal(t, kidStatus(keys), []string{"k-a5/active", "k-a3/retired"}, "keys after revoking k-a4")
	})
	t.Run("revoked keys are listed oldest first, from a time on", func(t *testing.T) {
		all, err := s.RevokedSigningKeys(ctx, "a", now.Add(-time.Hour))
		must(t, err, "RevokedSigningKeys")
		var kids []string
		for i, k := range all {
			equal(t, k.Status, store.StatusRevoked, "status of "+k.KID)
			equal(t, k.ZoneID, "a", "zone of "+k.KID)
			if i > 0 && k.RetiredAt.Before(all[i-1].RetiredAt) {
				t.Fatalf("%s revoked before %s but listed after it", k.KID, all[i-1].KID)
			}
			kids = append(kids, k.KID)
		}
		// k-a signed and k-a2 was pending at the first emergency rotation; k-a4 was
		// pending at the second.
		for _, kid := range []string{"k-a", "k-a2", "k-a4"} {
			if !slices.Contains(kids, kid) {
				t.Fatalf("revoked keys %v, want %s among them", kids, kid)
			}
		}
		later, err := s.RevokedSigningKeys(ctx, "a", now.Add(2*time.Minute+time.Millisecond))
		must(t, err, "RevokedSigningKeys")
		for _, k := range later {
			if k.KID == "k-a" || k.KID == "k-a2" {
				t.Fatalf("%s was revoked before the time asked for and is listed", k.KID)
			}
		}
	})
}
