package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/outbox"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

// refusingPublisher is a transport that is down: it refuses every entry.
type refusingPublisher struct{ calls atomic.Int64 }

func (p *refusingPublisher) Publish(context.Context, string, map[string]string) error {
	p.calls.Add(1)
	return errors.New("transport down")
}

// slowPublisher is a transport that takes a while to accept each entry.
type slowPublisher struct{ next revocation.Publisher }

func (p slowPublisher) Publish(ctx context.Context, stream string, fields map[string]string) error {
	time.Sleep(20 * time.Millisecond)
	return p.next.Publish(ctx, stream, fields)
}

// pipeline is the revocation pipeline of one test process, wired as sts/app.go does:
// the revocation set and epochs fed by the in-process bus, and an outbox relay
// publishing to the bus (or to pub when set), whose Flush bounds the revoke answers.
type pipeline struct {
	revocations *revocation.RevokedSet
	epochs      *revocation.Epochs
}

func withPipeline(t *testing.T, pub revocation.Publisher, wait time.Duration) (func(*issuer.Options), *pipeline) {
	p := &pipeline{}
	return func(o *issuer.Options) {
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
func (g *graph) gateway(p *pipeline) *verify.Verifier {
	g.t.Helper()
	v, err := verify.New(verify.Options{
		Issuer: g.sts.Issuer(g.zone), Resource: apiResource, Keys: g.sts.Keys(g.zone),
		Revocations: p.revocations, Epochs: p.epochs, RejectStaleEpoch: true, Now: g.clock.Now,
	})
	if err != nil {
		g.t.Fatal(err)
	}
	return v
}

// mandate exchanges subject for an api read mandate, through edge when it is set, and
// returns it, or "" with the status when the STS refused.
func (g *graph) mandate(subject, edge string) (string, int) {
	g.t.Helper()
	form := url.Values{
		"grant_type":         {issuer.GrantTokenExchange},
		"subject_token":      {subject},
		"subject_token_type": {issuer.TokenTypeAccessToken},
		"resource":           {apiResource},
		"scope":              {"read"},
	}
	if edge != "" {
		form.Set("delegation_edge_id", edge)
	}
	req := httptest.NewRequest(http.MethodPost, testBase+"/zones/"+g.zone+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	g.sts.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return "", rec.Code
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil {
		g.t.Fatal(err)
	}
	return tr.AccessToken, rec.Code
}

// grant is one way of getting an api mandate: a session mandate, the edge it is
// presented with (empty for alice's own) and the resource mandate got before any
// revocation.
type grant struct {
	subject, edge, mandate string
}

// chain is fresh sessions of alice, bob and carol with a root edge alice→bob (two hops)
// and its child bob→carol, and a mandate of each: alice's own, bob's and carol's
// delegated ones.
type chain struct {
	aliceSID    string
	root, child string
	alice       grant
	bob, carol  grant
}

func (g *graph) chain(gw *verify.Verifier) chain {
	g.t.Helper()
	alice, aliceSID := g.session(g.zone, "alice")
	bob, bobSID := g.session(g.zone, "bob")
	carol, carolSID := g.session(g.zone, "carol")
	root := g.mustDelegate(g.zone, alice, map[string]any{"target_session_id": bobSID, "resource": apiResource, "scopes": []string{"read"}, "ttl_seconds": 600, "max_hops": 2})
	child := g.mustDelegate(g.zone, bob, map[string]any{"target_session_id": carolSID, "resource": apiResource, "scopes": []string{"read"}, "ttl_seconds": 600, "parent_edge_id": root.ID})
	c := chain{aliceSID: aliceSID, root: root.ID, child: child.ID,
		alice: grant{subject: alice}, bob: grant{subject: bob, edge: root.ID}, carol: grant{subject: carol, edge: child.ID}}
	for _, gr := range []*grant{&c.alice, &c.bob, &c.carol} {
		var code int
		if gr.mandate, code = g.mandate(gr.subject, gr.edge); code != http.StatusOK {
			g.t.Fatalf("exchange before the revocation (edge %q): %d", gr.edge, code)
		}
		if _, err := gw.Verify(context.Background(), gr.mandate); err != nil {
			g.t.Fatalf("mandate refused before the revocation (edge %q): %v", gr.edge, err)
		}
	}
	return c
}

// admitted counts, among grants, the exchanges and old mandates this process still
// lets through.
func (g *graph) admitted(gw *verify.Verifier, grants ...grant) int {
	g.t.Helper()
	n := 0
	for _, gr := range grants {
		if _, code := g.mandate(gr.subject, gr.edge); code == http.StatusOK {
			n++
		}
		if _, err := gw.Verify(context.Background(), gr.mandate); err == nil {
			n++
		}
	}
	return n
}

func memoryOnly(t *testing.T, f func(t *testing.T, st store.Store)) {
	t.Run("memory", func(t *testing.T) { f(t, memory.New()) })
}

// TestAdminRevocationsHoldAtOnce: right after the 200 of an admin session revoke or an
// edge revoke (by its source session or an admin), the same process refuses every
// exchange and every earlier mandate below what was revoked, cascaded edges included,
// whether the transport is up or refusing; what was not revoked still passes.
func TestAdminRevocationsHoldAtOnce(t *testing.T) {
	paths := []struct {
		name string
		// revoke revokes part of c and returns the grants that must stop and those
		// that must keep working.
		revoke func(g *graph, admin string, c chain) (*httptest.ResponseRecorder, []grant, []grant)
	}{
		{"admin session revoke", func(g *graph, admin string, c chain) (*httptest.ResponseRecorder, []grant, []grant) {
			return g.do(http.MethodPost, g.path("/sessions/"+c.aliceSID+"/revoke"), admin, ""), []grant{c.alice, c.bob, c.carol}, nil
		}},
		{"root edge revoke by its source", func(g *graph, _ string, c chain) (*httptest.ResponseRecorder, []grant, []grant) {
			return g.do(http.MethodPost, g.path("/delegations/"+c.root+"/revoke"), c.alice.subject, ""), []grant{c.bob, c.carol}, []grant{c.alice}
		}},
		{"child edge revoke by an admin", func(g *graph, admin string, c chain) (*httptest.ResponseRecorder, []grant, []grant) {
			return g.do(http.MethodPost, g.path("/delegations/"+c.child+"/revoke"), admin, ""), []grant{c.carol}, []grant{c.alice}
		}},
	}
	// PostgreSQL runs with the transport refusing, where only the local application
	// can refuse; the memory store runs both.
	transports := []struct {
		name     string
		pub      func() revocation.Publisher
		postgres bool
	}{
		{"transport up", func() revocation.Publisher { return nil }, false},
		{"transport refusing", func() revocation.Publisher { return new(refusingPublisher) }, true},
	}
	for _, path := range paths {
		for _, tr := range transports {
			t.Run(path.name+"/"+tr.name, func(t *testing.T) {
				stores := eachStore
				if !tr.postgres {
					stores = memoryOnly
				}
				stores(t, func(t *testing.T, st store.Store) {
					// A short bound keeps 100 revocations against a dead transport
					// quick; TestAdminRevokeAnswersWhenTheTransportIsDown uses the default.
					opt, p := withPipeline(t, tr.pub(), 5*time.Millisecond)
					g := newGraph(t, st, opt)
					admin, _ := g.mint(g.zone, "write")
					gw := g.gateway(p)
					admitted, kept, wantKept := 0, 0, 0
					for range 100 {
						c := g.chain(gw)
						rec, stopped, live := path.revoke(g, admin, c)
						if rec.Code != http.StatusOK {
							t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
						}
						admitted += g.admitted(gw, stopped...)
						kept += g.admitted(gw, live...)
						wantKept += 2 * len(live) // an exchange and a verification each
					}
					if admitted != 0 {
						t.Fatalf("%d exchanges or mandates admitted right after 100 revocations, want 0", admitted)
					}
					if kept != wantKept {
						t.Fatalf("%d of %d exchanges and mandates outside the revocation passed", kept, wantKept)
					}
				})
			})
		}
	}
}

// TestSweptExpiryHoldsAtOnce: once the expiry sweep returns, this process refuses a
// delegated mandate of the expired edge even while its exp is within the verifier's
// leeway: the zone's epoch moved here at once, whether the transport is up or refusing.
func TestSweptExpiryHoldsAtOnce(t *testing.T) {
	for _, tr := range []struct {
		name string
		pub  func() revocation.Publisher
	}{
		{"transport up", func() revocation.Publisher { return nil }},
		{"transport refusing", func() revocation.Publisher { return new(refusingPublisher) }},
	} {
		t.Run(tr.name, func(t *testing.T) {
			opt, p := withPipeline(t, tr.pub(), 5*time.Millisecond)
			g := newGraph(t, memory.New(), opt)
			gw := g.gateway(p)
			admitted := 0
			for range 100 {
				alice, _ := g.session(g.zone, "alice")
				bob, bobSID := g.session(g.zone, "bob")
				edge := g.mustDelegate(g.zone, alice, map[string]any{"target_session_id": bobSID, "resource": apiResource, "scopes": []string{"read"}, "ttl_seconds": 1})
				old, code := g.mandate(bob, edge.ID)
				if code != http.StatusOK {
					t.Fatalf("delegated exchange: %d", code)
				}
				g.clock.Advance(time.Second) // the edge's expiry, well within the leeway
				if _, err := gw.Verify(context.Background(), old); err != nil {
					t.Fatalf("mandate refused before the sweep: %v", err)
				}
				if err := g.svc.SweepExpired(context.Background()); err != nil {
					t.Fatal(err)
				}
				if g.edge(g.zone, edge.ID).Status != store.StatusExpired {
					t.Fatal("the sweep did not expire the edge")
				}
				admitted += g.admitted(gw, grant{subject: bob, edge: edge.ID, mandate: old})
			}
			if admitted != 0 {
				t.Fatalf("%d exchanges or mandates admitted right after 100 sweeps, want 0", admitted)
			}
		})
	}
}

// TestAdminRevokeAnswersWhenTheTransportIsDown: with the publisher refusing, the 200
// still comes back (after the default bound) and says the revocation is not published;
// it holds in this process and its rows stay pending for the relay.
func TestAdminRevokeAnswersWhenTheTransportIsDown(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		pub := new(refusingPublisher)
		opt, p := withPipeline(t, pub, 0)
		g := newGraph(t, st, opt)
		gw := g.gateway(p)
		c := g.chain(gw)
		answered := make(chan *httptest.ResponseRecorder, 1)
		go func() {
			answered <- g.do(http.MethodPost, g.path("/sessions/"+c.aliceSID+"/revoke"), bootstrapToken, "")
		}()
		var rev sessionRevocation
		select {
		case rec := <-answered:
			decodeOK(t, rec, http.StatusOK, &rev)
		case <-time.After(10 * time.Second):
			t.Fatal("revoke did not answer with the transport down")
		}
		if rev.Published || len(rev.RevokedEdges) != 2 {
			t.Fatalf("answer = %+v, want published false and both edges revoked", rev)
		}
		if n := g.admitted(gw, c.alice, c.bob, c.carol); n != 0 {
			t.Fatalf("%d exchanges or mandates admitted after the revoke", n)
		}
		if pub.calls.Load() == 0 {
			t.Fatal("the relay never tried to publish")
		}
		revoked := map[string]bool{}
		for _, r := range g.pending() {
			if r.Stream == revocation.StreamSessionsRevoke {
				revoked[r.Fields["session_id"]+r.Fields["delegation_edge_id"]] = true
			}
		}
		if !revoked[c.aliceSID] || !revoked[c.root] || !revoked[c.child] {
			t.Fatalf("pending revocation rows = %v, want the session and both edges", revoked)
		}
		// The edge revoke answers the same way.
		var er edgeRevocation
		decodeOK(t, g.do(http.MethodPost, g.path("/delegations/"+g.chain(gw).root+"/revoke"), bootstrapToken, ""), http.StatusOK, &er)
		if er.Published || len(er.RevokedEdges) != 2 {
			t.Fatalf("edge revoke answer = %+v, want published false and two edges", er)
		}
	})
}

// TestAdminRevokeWaitsForPublication: with the transport up but slow, the 200 leaves
// once the revocation's rows are published, and says so.
func TestAdminRevokeWaitsForPublication(t *testing.T) {
	opt, p := withPipeline(t, slowPublisher{revocation.NewBus(0, nil)}, time.Minute)
	g := newGraph(t, memory.New(), opt)
	gw := g.gateway(p)
	var rev sessionRevocation
	decodeOK(t, g.do(http.MethodPost, g.path("/sessions/"+g.chain(gw).aliceSID+"/revoke"), bootstrapToken, ""), http.StatusOK, &rev)
	if !rev.Published {
		t.Fatalf("answer = %+v, want published", rev)
	}
	if rows := g.pending(); len(rows) != 0 {
		t.Fatalf("%d outbox rows still pending after the 200", len(rows))
	}
	var er edgeRevocation
	decodeOK(t, g.do(http.MethodPost, g.path("/delegations/"+g.chain(gw).root+"/revoke"), bootstrapToken, ""), http.StatusOK, &er)
	if !er.Published {
		t.Fatalf("edge revoke answer = %+v, want published", er)
	}
	if rows := g.pending(); len(rows) != 0 {
		t.Fatalf("%d outbox rows still pending after the edge revoke's 200", len(rows))
	}
}
