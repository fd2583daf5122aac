package caddymodules

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap/zaptest"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

const (
	testBase     = "https://sts.caddymodules.test"
	testResource = "https://api.caddymodules.test/v1"
)

// fixture is one zone with its own signing key. Every fixture gets a fresh zone id, so
// revocations published on the process-wide local bus never touch another test.
type fixture struct {
	clock  *testenv.Clock
	zone   string
	issuer string
	signer *mandate.Signer
	keys   mandate.KeySet
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	key, err := mandate.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := mandate.NewSigner(key)
	if err != nil {
		tb.Fatal(err)
	}
	zone := "z-" + randomHex(tb, 6)
	return &fixture{
		clock:  testenv.NewClock(time.Now()),
		zone:   zone,
		issuer: mandate.IssuerURL(testBase, zone),
		signer: signer,
		keys:   mandate.KeySet{signer.KID(): &key.PublicKey},
	}
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// claims are those of a resource mandate for testResource with the read and write
// scopes, on a session of its own, valid for five minutes of the fixture's clock (which
// the handler's verifier and response guard read).
func (f *fixture) claims(tb testing.TB) *mandate.Claims {
	now := f.clock.Now().Unix()
	sid := "sid-" + randomHex(tb, 8)
	return &mandate.Claims{
		Issuer: f.issuer, Subject: "agent-1", Audience: testResource,
		Expiry: now + 300, IssuedAt: now, NotBefore: now, ID: "jti-" + randomHex(tb, 4),
		ZoneID: f.zone, ClientID: "agent-1", SID: sid, RootSID: sid,
		Use: mandate.UseResource, Scope: "read write",
	}
}

func (f *fixture) sign(tb testing.TB, typ string, c *mandate.Claims) string {
	tb.Helper()
	tok, err := f.signer.Sign(typ, c)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// token signs the fixture's resource claims after change and returns the token with
// its claims.
func (f *fixture) token(tb testing.TB, change func(*mandate.Claims)) (string, *mandate.Claims) {
	tb.Helper()
	c := f.claims(tb)
	if change != nil {
		change(c)
	}
	return f.sign(tb, mandate.TypResource, c), c
}

// revocationEvent revokes sid in the fixture's zone.
func (f *fixture) revocationEvent(sid string) revocation.Event {
	now := time.Now()
	return revocation.Event{ZoneID: f.zone, SessionID: sid, Reason: "test", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}
}

// newHandler provisions h as Caddy would, on the process-wide local revocation bus,
// then gives it a verifier that knows the fixture's key (a bare test context has no STS
// to take keys from), and the verifier and its response guard the fixture's clock.
func (f *fixture) newHandler(tb testing.TB, h *Handler) *Handler {
	tb.Helper()
	if h.Issuer == "" {
		h.Issuer = f.issuer
	}
	if h.Resource == "" {
		h.Resource = testResource
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := h.Provision(ctx); err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := h.Cleanup(); err != nil {
			tb.Error(err)
		}
		cancel()
	})
	v, err := verify.New(verify.Options{
		Issuer:      h.Issuer,
		Resource:    h.Resource,
		Scopes:      h.Scopes,
		Keys:        f.keys,
		Revocations: h.pipeline.Revocations,
		Source:      h.pipeline.Source,
		Leeway:      time.Duration(h.Leeway),
		Now:         f.clock.Now,
	})
	if err != nil {
		tb.Fatal(err)
	}
	h.verifier = v
	h.clock = f.clock
	if err := h.newGuard(); err != nil {
		tb.Fatal(err)
	}
	h.logger = zaptest.NewLogger(tb)
	heartbeats(tb, h.pipeline.Publisher, h.pipeline.Key)
	return h
}

// heartbeats publishes a heartbeat on pub every 100 ms until the test ends, as the
// outbox relay of an STS does: without them every verifier on pub's transport is stale.
func heartbeats(tb testing.TB, pub revocation.Publisher, key []byte) {
	tb.Helper()
	beat := func() {
		now := time.Now()
		h := revocation.Heartbeat{Publisher: "test-relay", Watermark: now, SentAt: now}
		if err := pub.Publish(context.Background(), revocation.StreamSessionsRevoke, h.SignedFields(key)); err != nil {
			tb.Error(err)
		}
	}
	beat()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				beat()
			}
		}
	}()
	tb.Cleanup(func() {
		close(stop)
		<-done
	})
}

// revoke publishes the revocation of sid on h's pipeline, the way the STS's outbox
// relay does.
func (f *fixture) revoke(tb testing.TB, h *Handler, sid string) {
	tb.Helper()
	if err := h.pipeline.Publisher.Publish(context.Background(), revocation.StreamSessionsRevoke, f.revocationEvent(sid).Fields()); err != nil {
		tb.Fatal(err)
	}
}

// payload is n bytes that differ from one position to the next.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i % 251)
	}
	return p
}

// armWatch waits until a streaming response has started its revocation watch's timer on
// the fixture's clock, then moves the clock past the watch's delay (well under a second)
// so that the watch is in place.
func (f *fixture) armWatch(tb testing.TB) {
	tb.Helper()
	testenv.WaitFor(tb, "the stream watch to start", func() bool { return f.clock.Timers() > 0 })
	f.clock.Advance(time.Second)
}
