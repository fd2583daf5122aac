package issuer

import (
	"testing"
	"time"
)

func TestThrottleReservations(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	th := newThrottle(time.Minute, 100)
	pair := counter{scope: scopeClientSource, key: "pair", limit: 2}
	wide := counter{scope: scopeClient, key: "wide", limit: 3}
	cs := []counter{pair, wide}

	// Attempts in flight count: two reservations fill the pair, and the third is refused for a
	// second only, since they may yet succeed.
	r1, _, _ := th.reserve(cs, now)
	r2, _, _ := th.reserve(cs, now)
	if r1 == nil || r2 == nil {
		t.Fatal("reservations under the limit were refused")
	}
	if r, wait, c := th.reserve(cs, now); r != nil || wait != time.Second || c.scope != scopeClientSource {
		t.Fatalf("third reservation: %v, wait %s, counter %q", r != nil, wait, c.scope)
	}
	// An attempt that ran nothing gives its place back; nothing is locked.
	if locked := th.settle(r1, attemptAborted); len(locked) != 0 {
		t.Fatalf("an aborted attempt locked %v", locked)
	}
	r3, _, _ := th.reserve(cs, now)
	if r3 == nil {
		t.Fatal("the place of an aborted attempt was not released")
	}
	// A success forgives the pair's failures, but on the wider counter only releases itself.
	th.settle(r3, attemptFailed)
	th.settle(r2, attemptSucceeded)
	if e, ok := th.entries.Get("pair"); ok {
		t.Fatalf("pair after a success: %+v, want forgotten", *e)
	}
	if e, _ := th.entries.Get("wide"); e == nil || e.failures != 1 || e.pending != 0 {
		t.Fatalf("wide counter after a success: %+v, want the one failure kept", e)
	}
	// Failures reaching a limit lock that counter, once, for the rest of the window.
	var locked []counter
	for range 2 {
		r, _, _ := th.reserve(cs, now)
		if r == nil {
			t.Fatal("refused before the limit")
		}
		locked = append(locked, th.settle(r, attemptFailed)...)
	}
	if len(locked) != 2 || locked[0].scope != scopeClientSource || locked[1].scope != scopeClient {
		t.Fatalf("locked %v, want the pair then the wide counter", locked)
	}
	later := now.Add(20 * time.Second)
	if r, wait, _ := th.reserve(cs, later); r != nil || wait != 40*time.Second {
		t.Fatalf("locked out: reserved %v, wait %s; want the window's remaining 40s", r != nil, wait)
	}
	if r, _, _ := th.reserve(cs, now.Add(time.Minute)); r == nil {
		t.Fatal("still refused after the window")
	}
}

func TestThrottleBoundsItsTable(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	th := newThrottle(time.Minute, 10)
	key := func(i int) []counter { return []counter{{scope: scopeSource, key: string(rune('a' + i)), limit: 1}} }
	for i := range 50 {
		r, _, _ := th.reserve(key(i), now)
		if r == nil {
			t.Fatalf("fresh key %d refused", i)
		}
		th.settle(r, attemptFailed)
		if n := th.entries.Len(); n > 10 {
			t.Fatalf("table grew to %d entries, bound 10", n)
		}
	}
	// A full table forgot its oldest counters only: the ten newest still lock their keys.
	for i := 40; i < 50; i++ {
		if r, wait, _ := th.reserve(key(i), now); r != nil || wait != time.Minute {
			t.Fatalf("key %d after the flood: reserved %v, wait %s; want still locked", i, r != nil, wait)
		}
	}
	if r, _, _ := th.reserve(key(0), now); r == nil {
		t.Fatal("the oldest key is still counted in a table of 10 after 50 keys")
	}
}
