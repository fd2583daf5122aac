package outbox_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/internal/outbox"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

const zone = "z1"

// newStore returns a memory store with a zone and an application ready for sessions.
func newStore(t *testing.T) *memory.Store {
	t.Helper()
	ctx := context.Background()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := s.CreateZone(ctx, store.Zone{ID: zone, Name: "Zone one"}, store.SigningKey{KID: "k1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApplication(ctx, store.Application{ZoneID: zone, ClientID: "agent", Name: "Agent"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// revokeSession creates and revokes a session, which writes its outbox row.
func revokeSession(t *testing.T, s store.Store, sid, reason string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	if err := s.CreateSession(ctx, store.Session{ZoneID: zone, ID: sid, ClientID: "agent", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeSession(ctx, zone, sid, reason, now); err != nil {
		t.Fatal(err)
	}
}

func pending(t *testing.T, s store.Store) []store.OutboxEvent {
	t.Helper()
	rows, err := s.PendingOutbox(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// run starts the relay and stops it (waiting for Run to return) when the test ends.
func run(t *testing.T, r *outbox.Relay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		waitClosed(t, "Run to return after cancel", done)
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitClosed(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("gave up waiting: %s", what)
	}
}

// flaky refuses the first fails publications, then hands entries to next. It stands
// for a transport that is down for a while; the entries still travel on a real Bus.
type flaky struct {
	fails int
	next  revocation.Publisher
	store store.Store

	mu              sync.Mutex
	calls           int
	attemptsAtDelay int // Attempts of the row when the publisher finally accepted
}

func (f *flaky) Publish(ctx context.Context, stream string, fields map[string]string) error {
	if revocation.IsHeartbeat(fields) {
		if f.next == nil {
			return errors.New("transport down")
		}
		return f.next.Publish(ctx, stream, fields)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.fails {
		return errors.New("transport down")
	}
	rows, err := f.store.PendingOutbox(ctx, 1)
	if err != nil || len(rows) != 1 {
		return fmt.Errorf("reading the row being published: %d rows, %v", len(rows), err)
	}
	f.attemptsAtDelay = rows[0].Attempts
	return f.next.Publish(ctx, stream, fields)
}

func TestRelayRetriesUntilThePublisherAccepts(t *testing.T) {
	s := newStore(t)
	bus := revocation.NewBus(0, nil)
	st := revocation.NewRevokedSet(nil)
	src := bus.Attach(st, nil, nil)
	defer src.Close()
	pub := &flaky{fails: 3, next: bus, store: s}
	r := outbox.New(outbox.Options{Store: s, Publisher: pub, Interval: time.Hour})

	revokeSession(t, s, "ses-1", "compromised")
	run(t, r)
	waitFor(t, "the row to be marked published", func() bool { return len(pending(t, s)) == 0 })

	if _, hit := st.Revoked(zone, "ses-1"); !hit {
		t.Fatal("the revocation did not reach the bus")
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if pub.calls != 4 || pub.attemptsAtDelay != 3 {
		t.Fatalf("%d publish calls, %d attempts recorded before success; want 4 and 3", pub.calls, pub.attemptsAtDelay)
	}
	if s := src.Stats(); s.Applied != 1 {
		t.Fatalf("the entry was delivered %d times", s.Applied)
	}
}

func TestRelayNotifyPublishesAtOnce(t *testing.T) {
	s := newStore(t)
	bus := revocation.NewBus(0, nil)
	st := revocation.NewRevokedSet(nil)
	defer bus.Attach(st, nil, nil).Close()
	// An interval far beyond the test's patience: only Notify can explain a publication.
	r := outbox.New(outbox.Options{Store: s, Publisher: bus, Interval: time.Hour})
	run(t, r)
	// The first pass runs at start; wait until it found nothing to do.
	waitFor(t, "the relay's first pass", func() bool { return len(pending(t, s)) == 0 })

	for _, sid := range []string{"ses-a", "ses-b"} {
		revokeSession(t, s, sid, "logout")
		r.Notify()
		waitFor(t, sid+" to be published after Notify", func() bool {
			_, hit := st.Revoked(zone, sid)
			return hit
		})
	}
}

func TestRelaySignsAndCleansEntries(t *testing.T) {
	s := newStore(t)
	key := []byte("relay-key")
	bus := revocation.NewBus(0, nil)
	st := revocation.NewRevokedSet(nil)
	ep := &revocation.Epochs{}
	src := bus.Attach(st, ep, key)
	defer src.Close()
	r := outbox.New(outbox.Options{Store: s, Publisher: bus, Key: key, Interval: time.Hour})
	run(t, r)

	ctx := context.Background()
	now := time.Now()
	for _, sid := range []string{"src", "dst"} {
		if err := s.CreateSession(ctx, store.Session{ZoneID: zone, ID: sid, ClientID: "agent", ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateResource(ctx, store.Resource{ZoneID: zone, ID: "r1", Identifier: "https://api.example/", Scopes: []string{"read"}}); err != nil {
		t.Fatal(err)
	}
	edge, err := s.CreateEdge(ctx, store.Edge{
		ZoneID: zone, ID: "edg-1", SourceSessionID: "src", TargetSessionID: "dst",
		Resource: "https://api.example/", Scopes: []string{"read"}, ExpiresAt: now.Add(time.Hour), MaxHops: 1,
	}, func(*store.Edge, store.Session, store.Session) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	// A reason with a line break would be refused by every strict consumer; the relay
	// must clean it rather than let the revocation be dropped.
	if _, err := s.RevokeSession(ctx, zone, "src", "first line\nsecond line", now); err != nil {
		t.Fatal(err)
	}
	r.Notify()
	waitFor(t, "every row to be published", func() bool { return len(pending(t, s)) == 0 })

	if id, hit := st.Revoked(zone, "nothing", "src"); !hit || id != "src" {
		t.Fatal("the session revocation was not applied")
	}
	if _, hit := st.Revoked(zone, "edg-1"); !hit {
		t.Fatal("the cascaded edge revocation was not applied")
	}
	if n, ok := ep.Current(zone); !ok || n <= edge.Epoch {
		t.Fatalf("epoch %d, %v; want above %d", n, ok, edge.Epoch)
	}
	if stats := src.Stats(); stats.BadSignature != 0 || stats.Malformed != 0 || stats.Applied != 4 {
		t.Fatalf("want 4 entries applied and none dropped: %+v", stats)
	}
}

func TestRelayPublishesRevocationsMadeWhileRedisWasDown(t *testing.T) {
	opts, err := redis.ParseURL(testenv.RequireRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(opts)
	defer admin.Close()
	prefix := "caracal-test:" + randomHex(t) + ":"
	defer admin.Del(context.Background(), prefix+revocation.StreamSessionsRevoke, prefix+revocation.StreamDelegationInvalidate)

	p := startProxy(t, opts.Addr)
	pubOpts := *opts
	pubOpts.Addr = p.ln.Addr().String()
	pubOpts.MaxRetries = -1
	pubClient := redis.NewClient(&pubOpts)
	defer pubClient.Close()

	key := []byte("relay-key")
	st := revocation.NewRevokedSet(nil)
	c, err := revocation.NewRedisRevocationConsumer(context.Background(), st, nil, revocation.RedisOptions{
		Client: admin, Key: key, StreamPrefix: prefix, Block: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitClosed(t, "consumer ready", c.Ready())

	s := newStore(t)
	r := outbox.New(outbox.Options{
		Store:     s,
		Publisher: revocation.NewRedisPublisher(revocation.RedisOptions{Client: pubClient, StreamPrefix: prefix}),
		Key:       key,
		Interval:  time.Hour,
	})
	run(t, r)

	p.setCut(true)
	revokeSession(t, s, "ses-down", "incident")
	r.Notify()
	waitFor(t, "failed publication attempts", func() bool {
		rows := pending(t, s)
		return len(rows) == 1 && rows[0].Attempts >= 2
	})
	if _, hit := st.Revoked(zone, "ses-down"); hit {
		t.Fatal("applied while the publisher could not reach Redis")
	}

	p.setCut(false)
	waitFor(t, "the row to be published once Redis is back", func() bool { return len(pending(t, s)) == 0 })
	waitFor(t, "the consumer to apply it", func() bool {
		_, hit := st.Revoked(zone, "ses-down")
		return hit
	})
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// proxy relays TCP to Redis and can be cut (connections closed, new ones refused) to
// make Redis unreachable for the clients that use it.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
	})
	return p
}

func (p *proxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.cut {
			client.Close()
			server.Close()
			p.mu.Unlock()
			continue
		}
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go pipe(client, server)
		go pipe(server, client)
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if !cut {
		return
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestRelayFlushReturnsOnceEarlierRowsArePublished(t *testing.T) {
	s := newStore(t)
	bus := revocation.NewBus(0, nil)
	st := revocation.NewRevokedSet(nil)
	defer bus.Attach(st, nil, nil).Close()
	// An hour-long interval: only the Flush's own wake-up can publish the rows.
	r := outbox.New(outbox.Options{Store: s, Publisher: bus, Interval: time.Hour})
	run(t, r)
	waitFor(t, "the relay's first pass", func() bool { return len(pending(t, s)) == 0 })
	for i := range 5 {
		sid := fmt.Sprintf("ses-flush-%d", i)
		revokeSession(t, s, sid, "logout")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.Flush(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Flush: %v", err)
		}
		// No waiting: Flush's return is the promise.
		if _, hit := st.Revoked(zone, sid); !hit {
			t.Fatalf("%s not applied when Flush returned", sid)
		}
	}
}

func TestRelayFlushGivesUpWithItsContext(t *testing.T) {
	s := newStore(t)
	pub := &flaky{fails: 1 << 30, store: s}
	r := outbox.New(outbox.Options{Store: s, Publisher: pub, Interval: time.Hour})
	run(t, r)
	revokeSession(t, s, "ses-stuck", "logout")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with a dead publisher: %v, want the context's deadline", err)
	}
	if len(pending(t, s)) != 1 {
		t.Fatal("the unpublished row left the outbox")
	}
}

// stuck blocks every publication until its context ends, like a relay whose process
// hangs; entered is closed on the first call.
type stuck struct {
	once    sync.Once
	entered chan struct{}
}

func (s *stuck) Publish(ctx context.Context, _ string, _ map[string]string) error {
	s.once.Do(func() { close(s.entered) })
	<-ctx.Done()
	return ctx.Err()
}

func TestRelayTakesOverTheRowsOfAStuckRelayOnceItsLeaseLapses(t *testing.T) {
	s := newStore(t)
	bus := revocation.NewBus(0, nil)
	st := revocation.NewRevokedSet(nil)
	src := bus.Attach(st, nil, nil)
	defer src.Close()

	hung := &stuck{entered: make(chan struct{})}
	a := outbox.New(outbox.Options{Store: s, Publisher: hung, Interval: time.Hour, ID: "relay-a", Lease: 50 * time.Millisecond})
	revokeSession(t, s, "ses-stuck", "logout")
	run(t, a)
	waitClosed(t, "relay a to claim the row and hang", hung.entered)

	b := outbox.New(outbox.Options{Store: s, Publisher: bus, Interval: 10 * time.Millisecond})
	if id := b.ID(); id == "" || id == a.ID() {
		t.Fatalf("relay ids %q and %q; want a distinct generated one", a.ID(), id)
	}
	run(t, b)
	waitFor(t, "relay b to publish the row", func() bool { return len(pending(t, s)) == 0 })
	if _, hit := st.Revoked(zone, "ses-stuck"); !hit {
		t.Fatal("the row was marked published without reaching the bus")
	}
	if n := src.Stats().Applied; n != 1 {
		t.Fatalf("%d entries applied, want 1", n)
	}
}
