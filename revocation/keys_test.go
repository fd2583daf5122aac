package revocation

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
)

func revokeKeys(zone string, at time.Time, kids ...string) KeysEvent {
	return KeysEvent{ZoneID: zone, Event: KeysRevoke, KID: "kid-new", ActivatesAt: at, Revoked: kids, ExpiresAt: at.Add(time.Hour)}
}

func TestKeysEventRoundTrip(t *testing.T) {
	at := time.UnixMilli(1_900_000_000_123)
	for _, e := range []KeysEvent{
		{ZoneID: "z1", Event: KeysRotate, KID: "kid-2", ActivatesAt: at},
		revokeKeys("z1", at, "kid-1", "kid-0"),
	} {
		got, err := ParseKeysEvent(e.Fields())
		if err != nil {
			t.Fatalf("ParseKeysEvent(%v): %v", e.Fields(), err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip = %+v, want %+v", got, e)
		}
	}
}

func TestParseKeysEventRefuses(t *testing.T) {
	at := time.UnixMilli(1_900_000_000_123)
	base := func() map[string]string { return revokeKeys("z1", at, "kid-1").Fields() }
	cases := map[string]func(f map[string]string){
		"unknown field":         func(f map[string]string) { f["extra"] = "1" },
		"bad zone":              func(f map[string]string) { f["zone_id"] = "Z!" },
		"unknown event":         func(f map[string]string) { f["event"] = "drop" },
		"no kid":                func(f map[string]string) { delete(f, "kid") },
		"revoke without kids":   func(f map[string]string) { f["revoked_kids"] = " " },
		"revoke without expiry": func(f map[string]string) { delete(f, "expires_at") },
		"rotate with revoked":   func(f map[string]string) { f["event"] = KeysRotate },
		"signed time":           func(f map[string]string) { f["activates_at"] = "-1" },
		"kid with a space":      func(f map[string]string) { f["kid"] = "a b" },
		"no activation":         func(f map[string]string) { delete(f, "activates_at") },
	}
	for name, mutate := range cases {
		f := base()
		mutate(f)
		if _, err := ParseKeysEvent(f); err == nil {
			t.Errorf("%s: ParseKeysEvent accepted %v", name, f)
		}
	}
}

// recorder collects the events a subscriber received.
type recorder struct {
	mu  sync.Mutex
	got []KeysEvent
}

func (r *recorder) add(e KeysEvent) { r.mu.Lock(); r.got = append(r.got, e); r.mu.Unlock() }
func (r *recorder) events() []KeysEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]KeysEvent(nil), r.got...)
}

func TestKeyWatchersReplayLiveRevocationsToLateSubscribers(t *testing.T) {
	now := time.UnixMilli(1_900_000_000_000)
	clock := func() time.Time { return now }
	w := NewKeyWatchers(clock)
	var early recorder
	stop := w.Subscribe("z1", early.add)
	w.Notify(KeysEvent{ZoneID: "z1", Event: KeysRotate, KID: "kid-2", ActivatesAt: now})
	w.Notify(revokeKeys("z1", now, "kid-1"))
	w.Notify(revokeKeys("z2", now, "kid-9"))
	if n := len(early.events()); n != 2 {
		t.Fatalf("early subscriber got %d events, want 2 (rotate and revoke of z1)", n)
	}
	stop()
	w.Notify(revokeKeys("z1", now, "kid-3"))
	if n := len(early.events()); n != 2 {
		t.Fatalf("a cancelled subscriber got %d events, want still 2", n)
	}

	var late recorder
	w.Subscribe("z1", late.add)
	var kids []string
	for _, e := range late.events() {
		kids = append(kids, e.Revoked...)
	}
	if len(kids) != 2 {
		t.Fatalf("late subscriber was replayed revocations of %v, want kid-1 and kid-3", kids)
	}

	now = now.Add(2 * time.Hour)
	var after recorder
	w.Subscribe("z1", after.add)
	if n := len(after.events()); n != 0 {
		t.Fatalf("a subscriber after the revocations expired got %d events, want 0", n)
	}
}

func TestBusHandsSignedKeysEntriesToWatchers(t *testing.T) {
	key := []byte("bus-stream-key-0123456789")
	b := NewBus(time.Hour, nil)
	w := NewKeyWatchers(nil)
	var rec recorder
	w.Subscribe("z1", rec.add)
	src := b.AttachWithKeys(NewRevokedSet(nil), nil, key, nil, w)
	defer src.Close()
	at := time.Now()
	good := revokeKeys("z1", at, "kid-1")
	if err := b.Publish(context.Background(), StreamKeys, signed(key, StreamKeys, good.Fields())); err != nil {
		t.Fatal(err)
	}
	forged := revokeKeys("z1", at, "kid-2").Fields()
	forged["sig"] = Sign([]byte("another-key-0123456789"), StreamKeys, forged)
	if err := b.Publish(context.Background(), StreamKeys, forged); err != nil {
		t.Fatal(err)
	}
	got := rec.events()
	if len(got) != 1 || got[0].Revoked[0] != "kid-1" {
		t.Fatalf("watchers got %+v, want only the signed revoke of kid-1", got)
	}
	if st := src.Stats(); st.BadSignature != 1 {
		t.Fatalf("BadSignature = %d, want 1", st.BadSignature)
	}
}

func TestRedisConsumerHandsKeysEntriesToWatchers(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	t.Cleanup(func() { f.admin.Del(context.Background(), f.prefix+StreamKeys) })
	w := NewKeyWatchers(nil)
	var rec recorder
	w.Subscribe("z1", rec.add)
	o := f.options(newClient(t, redisOptions(t)))
	o.Keys = w
	c := startConsumer(t, NewRevokedSet(nil), &Epochs{}, o)
	waitClosed(t, "consumer ready", c.Ready())
	e := KeysEvent{ZoneID: "z1", Event: KeysRotate, KID: "kid-2", ActivatesAt: time.Now()}
	if err := f.pub.Publish(context.Background(), StreamKeys, signed(f.key, StreamKeys, e.Fields())); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the keys entry to reach the watchers", func() bool { return len(rec.events()) == 1 })
	if got := rec.events()[0]; got.KID != "kid-2" || got.Event != KeysRotate {
		t.Fatalf("watchers got %+v", got)
	}
}

func TestSubscribeAllSeesEveryZoneFromNowOn(t *testing.T) {
	w := NewKeyWatchers(nil)
	at := time.Now()
	w.Notify(revokeKeys("z1", at, "kid-0")) // before the subscription: not replayed
	var all, z2 recorder
	cancel := w.SubscribeAll(all.add)
	w.Subscribe("z2", z2.add)
	w.Notify(revokeKeys("z1", at, "kid-1"))
	w.Notify(KeysEvent{ZoneID: "z2", Event: KeysRotate, KID: "kid-2", ActivatesAt: at})
	got := all.events()
	if len(got) != 2 || got[0].ZoneID != "z1" || got[0].Revoked[0] != "kid-1" || got[1].ZoneID != "z2" {
		t.Fatalf("SubscribeAll got %+v, want the z1 revoke of kid-1 then the z2 rotate", got)
	}
	if n := len(z2.events()); n != 1 {
		t.Fatalf("the z2 subscriber got %d events, want 1", n)
	}
	cancel()
	w.Notify(revokeKeys("z3", at, "kid-3"))
	if n := len(all.events()); n != 2 {
		t.Fatalf("after cancel SubscribeAll still got events: %d", n)
	}
}
