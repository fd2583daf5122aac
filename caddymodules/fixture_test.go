package caddymodules

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap/zaptest"

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
// scopes, on a session of its own, valid for five minutes of the real clock (the guard
// ends responses by the real clock).
func (f *fixture) claims(tb testing.TB) *mandate.Claims {
	now := time.Now().Unix()
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
// then gives it a verifier that knows the fixture's key: a bare test context has no STS
// to take keys from.
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
	})
	if err != nil {
		tb.Fatal(err)
	}
	h.verifier = v
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

// recorder is the writer under a guard. It records what reaches it and offers every
// optional interface the guard must route through itself (ReadFrom, flushing,
// hijacking) plus one it must leave to http.ResponseController (write deadlines), so a
// test sees whether the guard bypassed its checks. With keep false it records only
// counts, so writing to it does not allocate.
type recorder struct {
	header http.Header
	status int
	keep   bool

	n        int   // body bytes received
	writes   []int // sizes of the writes received, when keep is set
	body     []byte
	readFrom int // calls of ReadFrom: the guard must never delegate to it
	flushes  int
	deadline time.Time
	conn     net.Conn // what Hijack hands out
}

func newRecorder(keep bool) *recorder {
	return &recorder{header: make(http.Header), keep: keep}
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.n += len(p)
	if r.keep {
		r.writes = append(r.writes, len(p))
		r.body = append(r.body, p...)
	}
	return len(p), nil
}

func (r *recorder) ReadFrom(io.Reader) (int64, error) {
	r.readFrom++
	return 0, nil
}

func (r *recorder) FlushError() error {
	r.flushes++
	return nil
}

func (r *recorder) SetWriteDeadline(t time.Time) error {
	r.deadline = t
	return nil
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return r.conn, bufio.NewReadWriter(bufio.NewReader(r.conn), bufio.NewWriter(r.conn)), nil
}

// probe is a guard built the way ServeHTTP builds one, with its hooks counted.
type probe struct {
	g *guard

	mu        sync.Mutex
	checksAt  []int // recorder byte counts at which the mandate was checked
	arms      int
	cancelled bool
}

// newProbe guards rec, checking every bytes; revoked answers the checks.
func newProbe(rec *recorder, every int, revoked func() bool) *probe {
	p := new(probe)
	p.g = &guard{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: rec},
		every:                 int64(every),
		check: func() bool {
			p.mu.Lock()
			p.checksAt = append(p.checksAt, rec.n)
			p.mu.Unlock()
			return revoked()
		},
		arm: func() {
			p.mu.Lock()
			p.arms++
			p.mu.Unlock()
		},
		cancel: func() {
			p.mu.Lock()
			p.cancelled = true
			p.mu.Unlock()
		},
	}
	p.g.self.g = p.g
	return p
}

func (p *probe) state() (checksAt []int, arms int, cancelled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.checksAt...), p.arms, p.cancelled
}

func never() bool { return false }
