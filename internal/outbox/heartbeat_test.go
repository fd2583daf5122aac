package outbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/outbox"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

// recorder hands entries to next and keeps them in order; while down it refuses the
// revocation rows (heartbeats still pass, so only the outbox is stuck).
type recorder struct {
	next revocation.Publisher

	mu      sync.Mutex
	down    bool
	entries []map[string]string
}

func (p *recorder) Publish(ctx context.Context, stream string, fields map[string]string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down && !revocation.IsHeartbeat(fields) {
		return errors.New("transport down")
	}
	p.entries = append(p.entries, fields)
	return p.next.Publish(ctx, stream, fields)
}

func (p *recorder) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// heartbeats returns the heartbeats published so far, and the index in the entries of
// each.
func (p *recorder) heartbeats(t *testing.T) ([]revocation.Heartbeat, []int) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var hs []revocation.Heartbeat
	var at []int
	for i, f := range p.entries {
		if !revocation.IsHeartbeat(f) {
			continue
		}
		h, err := revocation.ParseHeartbeat(f)
		if err != nil {
			t.Fatalf("the relay published a malformed heartbeat %v: %v", f, err)
		}
		hs = append(hs, h)
		at = append(at, i)
	}
	return hs, at
}

func TestRelayHeartbeatsMakeASourceFresh(t *testing.T) {
	s := newStore(t)
	key := []byte("relay-key")
	bus := revocation.NewBus(0, nil)
	src := bus.Attach(revocation.NewRevokedSet(nil), nil, key)
	defer src.Close()
	wrong := bus.Attach(revocation.NewRevokedSet(nil), nil, []byte("another key"))
	defer wrong.Close()
	if !src.Watermark().IsZero() {
		t.Fatal("a watermark before any relay ran")
	}
	before := time.Now().Truncate(time.Millisecond)
	r := outbox.New(outbox.Options{Store: s, Publisher: bus, Key: key, Interval: time.Hour, HeartbeatInterval: 10 * time.Millisecond, ID: "relay-a"})
	run(t, r)
	testenv.WaitFor(t, "the first heartbeat", func() bool { return !src.Watermark().IsZero() })
	if wm := src.Watermark(); wm.Before(before) || wm.After(time.Now()) {
		t.Fatalf("watermark %v outside [%v, now]", wm, before)
	}
	first := src.Watermark()
	testenv.WaitFor(t, "heartbeats to go on without a Notify", func() bool { return src.Watermark().After(first) })
	if st := src.Stats(); st.Heartbeats < 2 || st.BadSignature != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st := wrong.Stats(); !wrong.Watermark().IsZero() || st.BadSignature == 0 {
		t.Fatalf("a source with another key: watermark %v, stats %+v", wrong.Watermark(), st)
	}
}

func TestRelayWatermarkWaitsForStuckRows(t *testing.T) {
	s := newStore(t)
	bus := revocation.NewBus(0, nil)
	pub := &recorder{next: bus}
	r := outbox.New(outbox.Options{Store: s, Publisher: pub, Interval: time.Hour, HeartbeatInterval: time.Millisecond})
	run(t, r)
	testenv.WaitFor(t, "the first heartbeat", func() bool { hs, _ := pub.heartbeats(t); return len(hs) > 0 })

	pub.setDown(true)
	revokeSession(t, s, "ses-stuck", "test")
	committed := time.Now()
	r.Notify()
	// A pass that began before the row was written may still append a heartbeat, with a
	// watermark read before the row existed; from the first failed attempt on, none.
	testenv.WaitFor(t, "a failed attempt at the stuck row", func() bool { return pending(t, s)[0].Attempts >= 1 })
	hs, _ := pub.heartbeats(t)
	n := len(hs)
	// The relay keeps retrying (at most a second apart) and sends no heartbeat meanwhile.
	testenv.WaitFor(t, "retries of the stuck row", func() bool { return pending(t, s)[0].Attempts >= 3 })
	stuck := pending(t, s)[0].CreatedAt
	hs, _ = pub.heartbeats(t)
	if len(hs) != n {
		t.Fatalf("heartbeats went on while a row was stuck: %d then %d, last %+v", n, len(hs), hs[len(hs)-1])
	}
	for _, h := range hs {
		if h.Watermark.After(stuck) {
			t.Fatalf("heartbeat %+v vouches for the stuck row written at %v", h, stuck)
		}
	}

	pub.setDown(false)
	r.Notify()
	testenv.WaitFor(t, "a heartbeat past the stuck row", func() bool {
		hs, _ := pub.heartbeats(t)
		return hs[len(hs)-1].Watermark.After(committed)
	})
	hs, at := pub.heartbeats(t)
	pub.mu.Lock()
	defer pub.mu.Unlock()
	row := -1
	for i, f := range pub.entries {
		if f["session_id"] == "ses-stuck" {
			row = i
		}
	}
	for i, h := range hs {
		if h.Watermark.After(committed) && at[i] < row {
			t.Fatalf("heartbeat %+v (entry %d) ahead of the row committed before its watermark (entry %d)", h, at[i], row)
		}
		if i > 0 && h.Watermark.Before(hs[i-1].Watermark) {
			t.Fatalf("watermark went back from %v to %v", hs[i-1].Watermark, h.Watermark)
		}
	}
}

func TestRelayWatermarkNeverMovesBack(t *testing.T) {
	s := newStore(t)
	clock := testenv.NewClock(time.Now())
	pub := &recorder{next: revocation.NewBus(0, nil)}
	r := outbox.New(outbox.Options{Store: s, Publisher: pub, Interval: time.Hour, HeartbeatInterval: time.Millisecond, Now: clock.Now})
	run(t, r)
	testenv.WaitFor(t, "the first heartbeat", func() bool { hs, _ := pub.heartbeats(t); return len(hs) > 0 })
	hs, _ := pub.heartbeats(t)
	high := hs[0].Watermark

	clock.Advance(-time.Hour)
	r.Notify()
	testenv.WaitFor(t, "a heartbeat after the clock went back", func() bool { hs, _ := pub.heartbeats(t); return len(hs) > 1 })
	hs, _ = pub.heartbeats(t)
	if got := hs[1]; !got.Watermark.Equal(high) || got.SentAt.Before(got.Watermark) {
		t.Fatalf("after the clock went back an hour: %+v, want the watermark held at %v", got, high)
	}
}
