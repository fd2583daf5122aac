package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/outbox"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

// refusingPublisher is a transport that is down: it refuses every entry.
type refusingPublisher struct{ calls atomic.Int64 }

func (p *refusingPublisher) Publish(context.Context, string, map[string]string) error {
	p.calls.Add(1)
	return errors.New("transport down")
}

// pipeline is the revocation pipeline of one test process: the revocation set and
// epochs fed by the in-process bus, and an outbox relay publishing to the bus, or to
// pub when it is set.
type pipeline struct {
	revocations *revocation.RevokedSet
	epochs      *revocation.Epochs
}

// withPipeline wires the pipeline into the STS as sts/app.go does, with wait as the
// publication bound (the default when 0), and runs the relay for the test.
func withPipeline(t *testing.T, pub revocation.Publisher, wait time.Duration) (envOption, *pipeline) {
	p := &pipeline{}
	return func(o *Options) {
		bus := revocation.NewBus(0, o.Now)
		p.revocations, p.epochs = revocation.NewRevokedSet(o.Now), new(revocation.Epochs)
		src := bus.Attach(p.revocations, p.epochs, nil)
		if pub == nil {
			pub = bus
		}
		relay := outbox.New(outbox.Options{Store: o.Store, Publisher: pub})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			relay.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			_ = src.Close()
		})
		o.Revocations, o.RevocationSource, o.Epochs = p.revocations, src, p.epochs
		o.Revoked, o.Published, o.PublishWait = relay.Notify, relay.Flush, wait
	}, p
}

// gateway is a verifier of api mandates in the same process, on the STS's revocation
// set and epochs, refusing stale delegation epochs.
func (e *env) gateway(p *pipeline) *verify.Verifier {
	e.t.Helper()
	v, err := verify.New(verify.Options{
		Issuer: e.svc.Issuer("demo"), Resource: apiResource, Keys: e.svc.Keys("demo"),
		Revocations: p.revocations, Epochs: p.epochs, RejectStaleEpoch: true, Now: e.clock.Now,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// mandate exchanges subject for an api read mandate (extra form fields appended) and
// returns it, or "" with the status when the STS refused.
func (e *env) mandate(subject string, extra ...string) (string, int) {
	e.t.Helper()
	rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, append([]string{"scope", "read"}, extra...)...)})
	if rec.Code != http.StatusOK {
		return "", rec.Code
	}
	var tr tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		e.t.Fatal(err)
	}
	return tr.AccessToken, rec.Code
}

// delegatedPair is a session of agent with an edge to a session of reader, and the
// mandates each got before any revocation: agent's own and reader's delegated one.
type delegatedPair struct {
	agent, reader       string // session mandates
	agentSID, readerSID string
	edge                store.Edge
	direct, delegated   string // resource mandates
}

func (e *env) delegatedPair(gw *verify.Verifier) delegatedPair {
	e.t.Helper()
	ctx := context.Background()
	p := delegatedPair{agent: e.session("demo", "agent"), reader: e.session("demo", "reader")}
	p.agentSID, p.readerSID = claimsOf(e.t, p.agent).SID, claimsOf(e.t, p.reader).SID
	edge, err := e.store.CreateEdge(ctx, store.Edge{
		ZoneID: "demo", ID: store.NewID("edg_"), SourceSessionID: p.agentSID, TargetSessionID: p.readerSID,
		Resource: apiResource, Scopes: []string{"read"}, ExpiresAt: e.clock.Now().Add(10 * time.Minute), MaxHops: 1, CreatedAt: e.clock.Now(),
	}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	p.edge = edge
	var code int
	if p.direct, code = e.mandate(p.agent); code != http.StatusOK {
		e.t.Fatalf("exchange before the revocation: %d", code)
	}
	if p.delegated, code = e.mandate(p.reader, "delegation_edge_id", edge.ID); code != http.StatusOK {
		e.t.Fatalf("delegated exchange before the revocation: %d", code)
	}
	for _, tok := range []string{p.direct, p.delegated} {
		if _, err := gw.Verify(ctx, tok); err != nil {
			e.t.Fatalf("mandate refused before the revocation: %v", err)
		}
	}
	return p
}

// admitted counts what this process still lets through after p's root session was
// revoked: exchanges (direct and delegated) and the mandates issued before.
func (e *env) admitted(gw *verify.Verifier, p delegatedPair) int {
	e.t.Helper()
	n := 0
	if _, code := e.mandate(p.agent); code == http.StatusOK {
		n++
	}
	if _, code := e.mandate(p.reader, "delegation_edge_id", p.edge.ID); code == http.StatusOK {
		n++
	}
	for _, tok := range []string{p.direct, p.delegated} {
		if _, err := gw.Verify(context.Background(), tok); err == nil {
			n++
		}
	}
	return n
}

// TestSelfRevocationHoldsAtOnce: right after RFC 7009's 200, the same process refuses
// the session's exchanges, the delegated exchanges below it and every mandate issued
// before, whether the transport is up or refusing.
func TestSelfRevocationHoldsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		pub  func() revocation.Publisher
	}{
		{"transport up", func() revocation.Publisher { return nil }},
		{"transport refusing", func() revocation.Publisher { return new(refusingPublisher) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachStore(t, func(t *testing.T, open func() store.Store) {
				// A short bound keeps 100 revocations against a dead transport quick;
				// TestRevokeAnswersWhenTheTransportIsDown uses the default.
				opt, p := withPipeline(t, tc.pub(), 5*time.Millisecond)
				e := newEnv(t, open(), opt)
				gw := e.gateway(p)
				admitted := 0
				for range 100 {
					pair := e.delegatedPair(gw)
					if rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {pair.agent}}}); rec.Code != http.StatusOK {
						t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
					}
					admitted += e.admitted(gw, pair)
				}
				if admitted != 0 {
					t.Fatalf("%d exchanges or mandates admitted right after 100 self-revocations, want 0", admitted)
				}
			})
		})
	}
}

// TestRevokeAnswersWhenTheTransportIsDown: with the publisher refusing, the 200 still
// comes back (after the default bound), the revocation holds in this process and its
// rows stay pending for the relay.
func TestRevokeAnswersWhenTheTransportIsDown(t *testing.T) {
	pub := new(refusingPublisher)
	opt, p := withPipeline(t, pub, 0)
	e := newEnv(t, nil, opt)
	if e.svc.opts.PublishWait != DefaultPublishWait {
		t.Fatalf("publish wait = %s, want the default %s", e.svc.opts.PublishWait, DefaultPublishWait)
	}
	gw := e.gateway(p)
	pair := e.delegatedPair(gw)
	answered := make(chan int, 1)
	go func() {
		answered <- e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {pair.agent}}}).Code
	}()
	select {
	case code := <-answered:
		if code != http.StatusOK {
			t.Fatalf("revoke with the transport down: %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("revoke did not answer with the transport down")
	}
	if n := e.admitted(gw, pair); n != 0 {
		t.Fatalf("%d exchanges or mandates admitted after the revoke", n)
	}
	if pub.calls.Load() == 0 {
		t.Fatal("the relay never tried to publish")
	}
	rows, err := e.store.PendingOutbox(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	for _, r := range rows {
		if r.Stream == revocation.StreamSessionsRevoke {
			revoked[r.Fields["session_id"]+r.Fields["delegation_edge_id"]] = true
		}
	}
	if !revoked[pair.agentSID] || !revoked[pair.edge.ID] {
		t.Fatalf("pending revocation rows = %v, want the session %s and the edge %s", revoked, pair.agentSID, pair.edge.ID)
	}
}

// slowPublisher is a transport that takes a while to accept each entry.
type slowPublisher struct{ next revocation.Publisher }

func (p slowPublisher) Publish(ctx context.Context, stream string, fields map[string]string) error {
	time.Sleep(20 * time.Millisecond)
	return p.next.Publish(ctx, stream, fields)
}

// TestRevokeWaitsForPublication: with the transport up but slow, the revocation's rows
// are published when the 200 leaves.
func TestRevokeWaitsForPublication(t *testing.T) {
	opt, p := withPipeline(t, slowPublisher{revocation.NewBus(0, nil)}, time.Minute)
	e := newEnv(t, nil, opt)
	pair := e.delegatedPair(e.gateway(p))
	if rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {pair.agent}}}); rec.Code != http.StatusOK {
		t.Fatalf("revoke: %d", rec.Code)
	}
	rows, err := e.store.PendingOutbox(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 0 {
		t.Fatalf("%d outbox rows still pending after the 200", len(rows))
	}
}
