package revocation

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/internal/testenv"
)

// testBlock keeps idle reads short so position checks come quickly in tests.
const testBlock = 100 * time.Millisecond

type redisFixture struct {
	admin  *redis.Client
	prefix string
	key    []byte
	pub    *RedisPublisher
}

func newRedisFixture(t *testing.T) *redisFixture {
	t.Helper()
	admin := newClient(t, redisOptions(t))
	f := &redisFixture{admin: admin, prefix: streamPrefix(t, admin), key: []byte("test-stream-key-" + randomHex(t, 4))}
	f.pub = NewRedisPublisher(RedisOptions{Client: admin, StreamPrefix: f.prefix})
	return f
}

// options returns consumer options on client sharing the fixture's prefix and key.
func (f *redisFixture) options(client redis.UniversalClient) RedisOptions {
	return RedisOptions{Client: client, Key: f.key, StreamPrefix: f.prefix, Block: testBlock, MaxBackoff: 50 * time.Millisecond}
}

func (f *redisFixture) revoke(t *testing.T, e Event) {
	t.Helper()
	if err := f.pub.Publish(context.Background(), StreamSessionsRevoke, signed(f.key, StreamSessionsRevoke, e.Fields())); err != nil {
		t.Fatal(err)
	}
}

// heartbeat publishes a signed heartbeat with watermark wm (truncated to the wire's
// milliseconds, as returned).
func (f *redisFixture) heartbeat(t *testing.T, key []byte, wm time.Time) time.Time {
	t.Helper()
	wm = wm.Truncate(time.Millisecond)
	h := Heartbeat{Publisher: "test-relay", Watermark: wm, SentAt: wm}
	if err := f.pub.Publish(context.Background(), StreamSessionsRevoke, h.SignedFields(key)); err != nil {
		t.Fatal(err)
	}
	return wm
}

// addAt appends a signed event with an explicit stream id, as if published at ms.
func (f *redisFixture) addAt(t *testing.T, id string, e Event) {
	t.Helper()
	err := f.admin.XAdd(context.Background(), &redis.XAddArgs{
		Stream: f.prefix + StreamSessionsRevoke,
		ID:     id,
		Values: signed(f.key, StreamSessionsRevoke, e.Fields()),
	}).Err()
	if err != nil {
		t.Fatal(err)
	}
}

func revokedIn(st *RevokedSet, zone string, ids ...string) func() bool {
	return func() bool {
		for _, id := range ids {
			if _, hit := st.Revoked(zone, id); !hit {
				return false
			}
		}
		return true
	}
}

func TestRedisPublishReachesEveryConsumer(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	type consumer struct {
		st *RevokedSet
		ep *Epochs
		c  *RedisRevocationConsumer
	}
	var cs []consumer
	for range 2 {
		st, ep := NewRevokedSet(nil), &Epochs{}
		c := startConsumer(t, st, ep, f.options(newClient(t, redisOptions(t))))
		waitClosed(t, "consumer ready", c.Ready())
		cs = append(cs, consumer{st, ep, c})
	}

	f.revoke(t, sessionEvent("z1", "ses-1"))
	edge := sessionEvent("z1", "")
	edge.DelegationEdgeID = "edg-1"
	f.revoke(t, edge)
	ee := EpochEvent{ZoneID: "z1", Epoch: 12, EdgeID: "edg-1", Event: "revoke"}
	if err := f.pub.Publish(context.Background(), StreamDelegationInvalidate, signed(f.key, StreamDelegationInvalidate, ee.Fields())); err != nil {
		t.Fatal(err)
	}

	for i, c := range cs {
		testenv.WaitFor(t, fmt.Sprintf("consumer %d to apply the revocations", i+1), revokedIn(c.st, "z1", "ses-1", "edg-1"))
		testenv.WaitFor(t, fmt.Sprintf("consumer %d to see epoch 12", i+1), func() bool {
			n, ok := c.ep.Current("z1")
			return ok && n == 12
		})
		if _, hit := c.st.Revoked("z2", "ses-1"); hit {
			t.Fatalf("consumer %d applied a z1 revocation to z2", i+1)
		}
		if !c.c.Watermark().IsZero() {
			t.Fatalf("consumer %d reports a watermark before any heartbeat", i+1)
		}
	}
	wm := f.heartbeat(t, f.key, time.Now())
	for i, c := range cs {
		testenv.WaitFor(t, fmt.Sprintf("consumer %d to apply the heartbeat", i+1), func() bool { return c.c.Watermark().Equal(wm) })
		if s := c.c.Stats(); s.Heartbeats != 1 || s.Malformed != 0 || s.BadSignature != 0 {
			t.Fatalf("consumer %d stats %+v", i+1, s)
		}
	}
}

func TestRedisConsumerStartedLaterStillRejects(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	f.revoke(t, sessionEvent("z", "revoked-before-start"))

	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(f.admin))
	waitClosed(t, "consumer ready", c.Ready())
	// Ready means the rebuild is complete: no waiting for the entry.
	if _, hit := st.Revoked("z", "revoked-before-start"); !hit {
		t.Fatal("a revocation published before the consumer started is missing after Ready")
	}
	if s := c.Stats(); s.Rebuilds != 1 || s.Applied != 1 {
		t.Fatalf("stats %+v", s)
	}
	if c.Lag() != 0 {
		t.Fatalf("Lag = %v after catching up", c.Lag())
	}
}

func TestRedisRebuildStartsAtTheRetentionHorizon(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	now := time.Now()
	long := func(sid string) Event {
		return Event{ZoneID: "z", SessionID: sid, RevokedAt: now, ExpiresAt: now.Add(48 * time.Hour)}
	}
	f.addAt(t, strconv.FormatInt(now.Add(-2*time.Hour).UnixMilli(), 10)+"-0", long("beyond-horizon"))
	f.addAt(t, strconv.FormatInt(now.Add(-30*time.Minute).UnixMilli(), 10)+"-0", long("within-horizon"))

	st := NewRevokedSet(nil)
	o := f.options(f.admin)
	o.Retention = time.Hour
	c := startConsumer(t, st, nil, o)
	waitClosed(t, "consumer ready", c.Ready())
	if _, hit := st.Revoked("z", "within-horizon"); !hit {
		t.Fatal("an entry younger than the retention was not rebuilt")
	}
	if _, hit := st.Revoked("z", "beyond-horizon"); hit {
		t.Fatal("the rebuild read from before the retention horizon")
	}
}

func TestRedisConsumerRebuildsInPages(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	const n = 2*pageSize + 17
	pipe := f.admin.Pipeline()
	for i := range n {
		pipe.XAdd(context.Background(), &redis.XAddArgs{
			Stream: f.prefix + StreamSessionsRevoke,
			Values: signed(f.key, StreamSessionsRevoke, sessionEvent("z", fmt.Sprintf("s%d", i)).Fields()),
		})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(f.admin))
	waitClosed(t, "consumer ready", c.Ready())
	if st.Len() != n {
		t.Fatalf("rebuilt %d of %d entries", st.Len(), n)
	}
}

func TestRedisConsumerDropsForgedEntries(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(f.admin))
	waitClosed(t, "consumer ready", c.Ready())

	ctx := context.Background()
	publish := func(fields map[string]string) {
		t.Helper()
		if err := f.pub.Publish(ctx, StreamSessionsRevoke, fields); err != nil {
			t.Fatal(err)
		}
	}
	publish(sessionEvent("z", "unsigned").Fields())
	publish(signed([]byte("not-the-key"), StreamSessionsRevoke, sessionEvent("z", "wrong-key").Fields()))
	tampered := signed(f.key, StreamSessionsRevoke, sessionEvent("z", "original").Fields())
	tampered["session_id"] = "tampered"
	publish(tampered)
	// Signed for the other stream: a replay across streams must fail too.
	publish(signed(f.key, StreamDelegationInvalidate, sessionEvent("z", "cross-stream").Fields()))
	publish(signed(f.key, StreamSessionsRevoke, map[string]string{"zone_id": "z", "session_id": "no-times"}))
	f.revoke(t, sessionEvent("z", "genuine"))

	// Entries are applied in order, so once the last one is in, the rest were judged.
	testenv.WaitFor(t, "the genuine revocation", revokedIn(st, "z", "genuine"))
	if id, hit := st.Revoked("z", "unsigned", "wrong-key", "original", "tampered", "cross-stream", "no-times"); hit {
		t.Fatalf("forged entry for %s was applied", id)
	}
	if s := c.Stats(); s.BadSignature != 4 || s.Malformed != 1 || s.Applied != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRedisPublisherTrimsOnlyEntriesOlderThanRetention(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	now := time.Now()
	f.addAt(t, strconv.FormatInt(now.Add(-61*time.Minute).UnixMilli(), 10)+"-0", sessionEvent("z", "older"))
	f.addAt(t, strconv.FormatInt(now.Add(-59*time.Minute).UnixMilli(), 10)+"-0", sessionEvent("z", "younger"))

	pub := NewRedisPublisher(RedisOptions{Client: f.admin, StreamPrefix: f.prefix, Retention: time.Hour, Now: func() time.Time { return now }})
	if err := pub.Publish(context.Background(), StreamSessionsRevoke, sessionEvent("z", "new").Fields()); err != nil {
		t.Fatal(err)
	}
	msgs, err := f.admin.XRange(context.Background(), f.prefix+StreamSessionsRevoke, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, m := range msgs {
		kept = append(kept, m.Values["session_id"].(string))
	}
	if fmt.Sprint(kept) != "[younger new]" {
		t.Fatalf("stream holds %v, want [younger new]", kept)
	}
}

func TestRedisConsumerSurvivesKilledConnections(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	opts := redisOptions(t)
	opts.ClientName = "caracal-test-" + randomHex(t, 6)
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(newClient(t, opts)))
	waitClosed(t, "consumer ready", c.Ready())

	for round := range 3 {
		if killClients(t, f.admin, opts.ClientName) == 0 {
			// The consumer is between commands; kill its next connection instead.
			testenv.WaitFor(t, "a consumer connection to kill", func() bool { return killClients(t, f.admin, opts.ClientName) > 0 })
		}
		sid := fmt.Sprintf("after-kill-%d", round)
		f.revoke(t, sessionEvent("z", sid))
		testenv.WaitFor(t, sid+" to be applied", revokedIn(st, "z", sid))
	}
}

func TestRedisConsumerCatchesUpAfterAnOutage(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	opts := redisOptions(t)
	p := testenv.NewProxy(t, opts.Addr)
	opts.Addr = p.Addr()
	opts.MaxRetries = -1
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(newClient(t, opts)))
	waitClosed(t, "consumer ready", c.Ready())
	f.revoke(t, sessionEvent("z", "before"))
	testenv.WaitFor(t, "the first revocation", revokedIn(st, "z", "before"))

	wm := f.heartbeat(t, f.key, time.Now())
	testenv.WaitFor(t, "the first heartbeat", func() bool { return c.Watermark().Equal(wm) })

	p.Cut(true)
	errs := c.Stats().Errors
	testenv.WaitFor(t, "the consumer to notice the outage", func() bool { return c.Stats().Errors >= errs+3 })

	var during []string
	for i := range 50 {
		sid := fmt.Sprintf("during-%d", i)
		during = append(during, sid)
		f.revoke(t, sessionEvent("z", sid))
	}
	wm2 := f.heartbeat(t, f.key, time.Now().Add(time.Millisecond))
	errs = c.Stats().Errors
	testenv.WaitFor(t, "more failed attempts", func() bool { return c.Stats().Errors >= errs+3 })
	if got := c.Watermark(); !got.Equal(wm) {
		t.Fatalf("Watermark moved from %v to %v while Redis was unreachable", wm, got)
	}
	if id, hit := st.Revoked("z", during...); hit {
		t.Fatalf("%s applied while Redis was unreachable", id)
	}

	p.Cut(false)
	testenv.WaitFor(t, "every revocation published during the outage", revokedIn(st, "z", during...))
	testenv.WaitFor(t, "the heartbeat sent during the outage", func() bool { return c.Watermark().Equal(wm2) })
}

func TestRedisConsumerThatNeverReachedRedis(t *testing.T) {
	t.Parallel()
	client := newClient(t, &redis.Options{Addr: deadAddr(t), MaxRetries: -1})
	c := startConsumer(t, NewRevokedSet(nil), nil, RedisOptions{Client: client, Block: testBlock, MaxBackoff: 20 * time.Millisecond})
	testenv.WaitFor(t, "failed attempts", func() bool { return c.Stats().Errors >= 3 })
	if !c.Watermark().IsZero() || c.Stats().Synced {
		t.Fatalf("Watermark = %v, synced = %v without any contact", c.Watermark(), c.Stats().Synced)
	}
	select {
	case <-c.Ready():
		t.Fatal("ready without a rebuild")
	default:
	}
}

func TestRedisConsumerRebuildsAfterAStreamReset(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(f.admin))
	waitClosed(t, "consumer ready", c.Ready())
	f.revoke(t, sessionEvent("z", "before-reset"))
	testenv.WaitFor(t, "the first revocation", revokedIn(st, "z", "before-reset"))

	// A failover to a replica that lags, or a recreated stream: the stream now ends
	// below the consumer's position and new entries get ids it would skip.
	ctx := context.Background()
	if err := f.admin.Del(ctx, f.prefix+StreamSessionsRevoke).Err(); err != nil {
		t.Fatal(err)
	}
	f.addAt(t, strconv.FormatInt(time.Now().Add(-10*time.Minute).UnixMilli(), 10)+"-0", sessionEvent("z", "after-reset"))

	testenv.WaitFor(t, "the entry below the old position", revokedIn(st, "z", "after-reset"))
	// The counters are updated when the rebuild completes, just after the entries apply.
	testenv.WaitFor(t, "one gap and a second rebuild", func() bool { s := c.Stats(); return s.Gaps == 1 && s.Rebuilds == 2 })
	if s := c.Stats(); s.Gaps != 1 || s.Rebuilds != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRedisConsumerRebuildsWhenUnreadEntriesAreTrimmed(t *testing.T) {
	t.Parallel()
	f := newRedisFixture(t)
	st := NewRevokedSet(nil)
	c := startConsumer(t, st, nil, f.options(f.admin))
	waitClosed(t, "consumer ready", c.Ready())
	f.revoke(t, sessionEvent("z", "first"))
	testenv.WaitFor(t, "the first revocation", revokedIn(st, "z", "first"))

	ctx := context.Background()
	key := f.prefix + StreamSessionsRevoke
	t.Run("trimming the entry at its position is no gap", func(t *testing.T) {
		last, err := f.admin.XRevRangeN(ctx, key, "+", "-", 1).Result()
		if err != nil || len(last) != 1 {
			t.Fatal(last, err)
		}
		if err := f.admin.XDel(ctx, key, last[0].ID).Err(); err != nil {
			t.Fatal(err)
		}
		reads := c.Stats().Reads
		testenv.WaitFor(t, "several idle reads", func() bool { return c.Stats().Reads >= reads+3 })
		if s := c.Stats(); s.Gaps != 0 || s.Rebuilds != 1 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("an entry removed before it was read is a gap", func(t *testing.T) {
		// In one transaction, so the consumer cannot read the entry in between.
		_, err := f.admin.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: signed(f.key, StreamSessionsRevoke, sessionEvent("z", "lost").Fields())})
			p.XTrimMaxLen(ctx, key, 0)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, "the gap to be noticed", func() bool { return c.Stats().Gaps == 1 })
		testenv.WaitFor(t, "the rebuild", func() bool { return c.Stats().Rebuilds == 2 })
		reads := c.Stats().Reads
		testenv.WaitFor(t, "several idle reads", func() bool { return c.Stats().Reads >= reads+3 })
		if s := c.Stats(); s.Gaps != 1 || s.Rebuilds != 2 {
			t.Fatalf("the consumer keeps rebuilding: %+v", s)
		}
		f.revoke(t, sessionEvent("z", "after-gap"))
		testenv.WaitFor(t, "a revocation after the gap", revokedIn(st, "z", "after-gap"))
	})
}
