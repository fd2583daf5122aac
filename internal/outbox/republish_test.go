package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/internal/outbox"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/postgres"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

// openPostgres returns a PostgreSQL store on a database of its own, with the zone and
// application newStore creates.
func openPostgres(t *testing.T) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, drop, err := testenv.CreateDatabase(ctx, "outbox")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	s, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateZone(ctx, store.Zone{ID: zone, Name: "Zone one"}, store.SigningKey{KID: "k1", Sealed: []byte{1}, PublicJWK: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApplication(ctx, store.Application{ZoneID: zone, ClientID: "agent", Name: "Agent", SecretHash: "x"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// publisherClient is a client tuned like the relay's in production.
func publisherClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	opts := &redis.Options{Addr: addr}
	revocation.TunePublisherOptions(opts)
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// sessionEntries returns the session ids of the revocation entries on the stream, in
// stream order.
func sessionEntries(t *testing.T, c *redis.Client, key string) []string {
	t.Helper()
	msgs, err := c.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if sid, ok := m.Values["session_id"].(string); ok {
			out = append(out, sid)
		}
	}
	return out
}

func TestTwoRelaysOnOnePostgresOutboxPublishEachRowOnce(t *testing.T) {
	opts, err := redis.ParseURL(testenv.RequireRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(opts)
	defer admin.Close()
	prefix := "caracal-test:" + randomHex(t) + ":"
	defer admin.Del(context.Background(), prefix+revocation.StreamSessionsRevoke, prefix+revocation.StreamDelegationInvalidate, prefix+revocation.GenerationKey)

	s := openPostgres(t)
	var relays []*outbox.Relay
	for i := range 2 {
		r := outbox.New(outbox.Options{
			Store:     s,
			Publisher: revocation.NewRedisPublisher(revocation.RedisOptions{Client: publisherClient(t, opts.Addr), StreamPrefix: prefix}),
			Key:       []byte("relay-key"),
			Interval:  20 * time.Millisecond,
			Batch:     7,
			ID:        fmt.Sprintf("relay-%d", i),
		})
		run(t, r)
		relays = append(relays, r)
	}
	for _, r := range relays {
		waitFor(t, "the relay to establish the stream history", func() bool { _, ok := r.Generation(); return ok })
	}
	g0, _ := relays[0].Generation()
	g1, _ := relays[1].Generation()
	if g0 != g1 {
		t.Fatalf("the relays hold generations %q and %q", g0, g1)
	}

	var want []string
	for i := range 50 {
		sid := fmt.Sprintf("ses-%02d", i)
		revokeSession(t, s, sid, "bulk")
		want = append(want, sid)
		relays[i%2].Notify()
	}
	waitFor(t, "every row to be published", func() bool { return len(pending(t, s)) == 0 })

	got := sessionEntries(t, admin, prefix+revocation.StreamSessionsRevoke)
	if !slices.Equal(got, want) {
		t.Fatalf("stream holds %d session entries %v, want each of the 50 once, in order", len(got), got)
	}
}

// redisServer is a private redis-server without persistence: killing and restarting it
// loses its data, like a Redis restart, failover or FLUSHALL in production.
type redisServer struct {
	port string
	cmd  *exec.Cmd
}

func startRedisServer(t *testing.T, port string) *redisServer {
	t.Helper()
	if port == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	rs := &redisServer{port: port, cmd: cmd}
	t.Cleanup(rs.stop)
	c := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer c.Close()
	waitFor(t, "the private redis-server to answer", func() bool {
		return c.Ping(context.Background()).Err() == nil
	})
	return rs
}

func (rs *redisServer) addr() string { return "127.0.0.1:" + rs.port }

func (rs *redisServer) stop() {
	if rs.cmd.ProcessState == nil {
		_ = rs.cmd.Process.Kill()
		_ = rs.cmd.Wait()
	}
}

// watching is a RedisPublisher that records, for every entry published, whether the
// generation marker existed at that moment.
type watching struct {
	*revocation.RedisPublisher
	admin *redis.Client

	mu     sync.Mutex
	marked []bool
}

func (w *watching) Publish(ctx context.Context, stream string, fields map[string]string) error {
	n, err := w.admin.Exists(ctx, revocation.GenerationKey).Result()
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.marked = append(w.marked, n == 1)
	w.mu.Unlock()
	return w.RedisPublisher.Publish(ctx, stream, fields)
}

func (w *watching) reset() {
	w.mu.Lock()
	w.marked = nil
	w.mu.Unlock()
}

func TestRelayRepublishesLiveRevocationsAfterRedisLostItsData(t *testing.T) {
	rs := startRedisServer(t, "")
	admin := redis.NewClient(&redis.Options{Addr: rs.addr(), MaxRetries: -1})
	defer admin.Close()
	s := openPostgres(t)
	ctx := context.Background()
	now := time.Now()

	// Three live session revocations, one live edge revocation (between two active
	// sessions), one revocation whose session expired beyond the grace, one active
	// session.
	for _, sid := range []string{"live-1", "live-2", "live-3"} {
		revokeSession(t, s, sid, "gone")
	}
	for sid, exp := range map[string]time.Time{"old": now.Add(-revocation.ExpiryGrace - time.Minute), "src": now.Add(time.Hour), "dst": now.Add(time.Hour), "active": now.Add(time.Hour)} {
		if err := s.CreateSession(ctx, store.Session{ZoneID: zone, ID: sid, ClientID: "agent", CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RevokeSession(ctx, zone, "old", "expired long ago", now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateResource(ctx, store.Resource{ZoneID: zone, ID: "r1", Identifier: "https://api.example/", Scopes: []string{"read"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEdge(ctx, store.Edge{ZoneID: zone, ID: "edg-1", SourceSessionID: "src", TargetSessionID: "dst",
		Resource: "https://api.example/", Scopes: []string{"read"}, ExpiresAt: now.Add(time.Hour), MaxHops: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeEdge(ctx, zone, "edg-1", "edge gone", now); err != nil {
		t.Fatal(err)
	}
	// An emergency rotation revoked the zone's first key k1; k2 signs.
	if err := s.RotateSigningKey(ctx, zone, store.SigningKey{KID: "k2", Sealed: []byte{2}, PublicJWK: []byte("{}")},
		store.KeyRotation{Now: now, ActivateAt: now, RetireUntil: now.Add(time.Hour), Revoke: true}); err != nil {
		t.Fatal(err)
	}
	const keyRetention = 2 * time.Hour

	key := []byte("relay-key")
	pub := &watching{RedisPublisher: revocation.NewRedisPublisher(revocation.RedisOptions{Client: publisherClient(t, rs.addr())}), admin: admin}
	r := outbox.New(outbox.Options{Store: s, Publisher: pub, Key: key, Interval: 20 * time.Millisecond, KeyRetention: keyRetention})
	hb := revocation.Heartbeat{Publisher: "relay-test", Watermark: now, SentAt: now}.Fields()
	if err := r.PublishHeartbeat(ctx, hb); !errors.Is(err, outbox.ErrHistoryPending) {
		t.Fatalf("heartbeat before the history was established: %v, want ErrHistoryPending", err)
	}
	run(t, r)
	waitFor(t, "the first republication", func() bool { return r.Stats().Republications == 1 })
	waitFor(t, "every row to be published", func() bool { return len(pending(t, s)) == 0 })
	gen, ok := r.Generation()
	if !ok || gen == "" {
		t.Fatalf("generation %q, %v after the first republication", gen, ok)
	}
	if err := r.PublishHeartbeat(ctx, hb); err != nil {
		t.Fatalf("heartbeat with the history established: %v", err)
	}

	// Redis loses everything.
	rs.stop()
	pub.reset()
	before := r.Stats().Republished
	startRedisServer(t, rs.port) // the same port, empty: publishers reconnect to it
	back := time.Now()

	t.Run("a heartbeat of the lost generation is refused and appends nothing", func(t *testing.T) {
		err := pub.RedisPublisher.PublishHeartbeat(ctx, gen, hb)
		if !errors.Is(err, revocation.ErrHistoryLost) {
			t.Fatalf("PublishHeartbeat after the loss: %v, want ErrHistoryLost", err)
		}
	})
	waitFor(t, "the republication after the loss", func() bool { return r.Stats().Republications == 2 })
	t.Logf("republication complete %s after Redis answered again", time.Since(back).Round(time.Millisecond))

	t.Run("every live revocation and nothing expired is back, before the marker", func(t *testing.T) {
		msgs, err := admin.XRange(ctx, revocation.StreamSessionsRevoke, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var anchors []string
		for _, m := range msgs {
			fields := make(map[string]string)
			for k, v := range m.Values {
				fields[k] = v.(string)
			}
			if revocation.IsHeartbeat(fields) {
				t.Fatalf("a heartbeat on the wiped stream: %v", fields)
			}
			if !revocation.VerifySignature(key, revocation.StreamSessionsRevoke, fields) {
				t.Fatalf("republished entry %v is not signed", fields)
			}
			anchors = append(anchors, fields["session_id"]+fields["delegation_edge_id"])
		}
		slices.Sort(anchors)
		want := []string{"edg-1", "live-1", "live-2", "live-3"}
		if !slices.Equal(anchors, want) {
			t.Fatalf("republished anchors %v, want %v", anchors, want)
		}
		// One more: the revocation of k1 on caracal.keys.
		if n := r.Stats().Republished - before; n != uint64(len(want)+1) {
			t.Fatalf("%d entries republished, want %d", n, len(want)+1)
		}
		pub.mu.Lock()
		defer pub.mu.Unlock()
		if len(pub.marked) != len(want)+1 || slices.Contains(pub.marked, true) {
			t.Fatalf("marker present at publication: %v; want %d publications, all before the marker", pub.marked, len(want)+1)
		}
	})
	t.Run("the revoked signing key is back on caracal.keys, signed", func(t *testing.T) {
		msgs, err := admin.XRange(ctx, revocation.StreamKeys, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 1 {
			t.Fatalf("%d caracal.keys entries after the republication, want 1", len(msgs))
		}
		fields := make(map[string]string)
		for k, v := range msgs[0].Values {
			fields[k] = v.(string)
		}
		if !revocation.VerifySignature(key, revocation.StreamKeys, fields) {
			t.Fatalf("republished keys entry %v is not signed", fields)
		}
		e, err := revocation.ParseKeysEvent(fields)
		if err != nil {
			t.Fatal(err)
		}
		if e.ZoneID != zone || e.Event != revocation.KeysRevoke || !slices.Equal(e.Revoked, []string{"k1"}) || e.KID != "k2" {
			t.Fatalf("republished keys entry %+v, want zone %s revoking k1 with k2 signing", e, zone)
		}
		if !e.ExpiresAt.After(now.Add(keyRetention - time.Minute)) {
			t.Fatalf("the republished revocation expires at %s, before the key retention ends", e.ExpiresAt)
		}
	})
	t.Run("heartbeats resume under the new generation, after the republished entries", func(t *testing.T) {
		next, ok := r.Generation()
		if !ok || next == gen {
			t.Fatalf("generation %q, %v after the loss; want a new one", next, ok)
		}
		if marker, err := admin.Get(ctx, revocation.GenerationKey).Result(); err != nil || marker != next {
			t.Fatalf("marker %q, %v; want %q", marker, err, next)
		}
		if err := r.PublishHeartbeat(ctx, hb); err != nil {
			t.Fatalf("heartbeat after the republication: %v", err)
		}
		msgs, err := admin.XRange(ctx, revocation.StreamSessionsRevoke, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if last := msgs[len(msgs)-1]; last.Values["type"] != "heartbeat" || len(msgs) != 5 {
			t.Fatalf("stream after the heartbeat: %d entries ending with %v", len(msgs), last.Values)
		}
	})
}

// A relay's first publication after Redis returns must go through: with go-redis'
// defaults, the failed dials of an outage open the pool's dial breaker and the first
// calls after Redis is back fail until its background probe (once a second) gets in.
func TestPublisherClientRecoversAsSoonAsRedisReturns(t *testing.T) {
	rs := startRedisServer(t, "")
	pub := revocation.NewRedisPublisher(revocation.RedisOptions{Client: publisherClient(t, rs.addr())})
	ctx := context.Background()
	fields := map[string]string{"n": "1"}
	if err := pub.Publish(ctx, revocation.StreamSessionsRevoke, fields); err != nil {
		t.Fatal(err)
	}
	rs.stop()
	// Each failed call dials up to three times (MaxRetries 2): 30 failed dials, more
	// than the default dial breaker (PoolSize = 10 per CPU) tolerates on this machine.
	for range 10 {
		if err := pub.Publish(ctx, revocation.StreamSessionsRevoke, fields); err == nil {
			t.Fatal("published while Redis was down")
		}
	}
	startRedisServer(t, rs.port)
	if err := pub.Publish(ctx, revocation.StreamSessionsRevoke, fields); err != nil {
		t.Fatalf("first publication after Redis returned: %v", err)
	}
}
