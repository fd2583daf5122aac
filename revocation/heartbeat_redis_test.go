package revocation

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caracalgw/caracal/internal/testenv"
)

func TestRedisConsumerWithTheWrongKeyStaysStaleAndSaysWhy(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	core, logs := observer.New(zapcore.WarnLevel)
	c0 := newClock(time.Now())
	o := f.options(f.admin)
	o.Key = []byte("not-the-deployment-key")
	o.Logger = zap.New(core)
	o.Now = c0.now
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, o)
	waitClosed(t, "consumer ready", c.Ready())

	f.revoke(t, sessionEvent("z", "s1"))
	f.heartbeat(t, f.key, time.Now())
	f.heartbeat(t, f.key, time.Now())
	testenv.WaitFor(t, "three entries dropped", func() bool { return c.Stats().BadSignature == 3 })
	if !c.Watermark().IsZero() {
		t.Fatalf("a consumer with the wrong key has watermark %v", c.Watermark())
	}
	if _, hit := st.Revoked("z", "s1"); hit {
		t.Fatal("an entry signed with another key was applied")
	}
	warns := logs.FilterMessage("1 entries dropped for bad signatures; check stream_key").All()
	if len(warns) != 1 || logs.Len() != 1 {
		t.Fatalf("want one rate-limited WARN naming stream_key, got %v", logs.All())
	}

	// Past the rate limit, the next drop logs the count since the previous line.
	c0.advance(badSignatureLogEvery)
	f.heartbeat(t, f.key, time.Now())
	testenv.WaitFor(t, "the second WARN", func() bool { return logs.Len() == 2 })
	if got := logs.All()[1].Message; got != "3 entries dropped for bad signatures; check stream_key" {
		t.Fatalf("second WARN %q", got)
	}
}

func TestRedisHeartbeatCountsOnlyAfterTheRebuild(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	ev := sessionEvent("z", "s1")
	f.revoke(t, ev)
	wm := f.heartbeat(t, f.key, time.Now())
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(f.admin))
	waitClosed(t, "consumer ready", c.Ready())
	// The heartbeat was read during the rebuild; once it is over, it counts.
	if got := c.Watermark(); !got.Equal(wm) {
		t.Fatalf("Watermark = %v after the rebuild, want %v", got, wm)
	}
	if _, hit := st.Revoked("z", "s1"); !hit {
		t.Fatal("the revocation ahead of the heartbeat is missing")
	}
	f.heartbeat(t, f.key, wm.Add(-time.Minute))
	f.revoke(t, ev)
	testenv.WaitFor(t, "the replay to be counted", func() bool { return c.Stats().Duplicates == 1 })
	if got := c.Watermark(); !got.Equal(wm) {
		t.Fatalf("an older heartbeat moved the watermark to %v", got)
	}
	if s := c.Stats(); s.Heartbeats != 2 || s.Applied != 1 {
		t.Fatalf("stats %+v", s)
	}
}
