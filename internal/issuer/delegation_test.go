package issuer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/policies"
	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

// graphEnv is a zone with eight clients (c0..c7), one session each, and grants for
// c0..c5 on the api resource (c6 and c7 have none, so the policy refuses paths rooted
// at them).
type graphEnv struct {
	*env
	sessions []string // sid per client index
	tokens   []string // session mandate per client index
	// revocations and epochs are the STS's revocation set and epoch tracker when it
	// reads state through the pipeline (nil when it reads storage on every exchange);
	// sync feeds them as the relay would.
	revocations *revocation.RevokedSet
	epochs      *revocation.Epochs
}

// sync delivers the revocations written to the outbox so far to the STS's revocation
// set, as the outbox relay and the transport do.
func (g *graphEnv) sync(t *testing.T) {
	t.Helper()
	if g.revocations == nil {
		return
	}
	pending, err := g.store.PendingOutbox(context.Background(), 100_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range pending {
		switch row.Stream {
		case revocation.StreamSessionsRevoke:
			ev, err := revocation.ParseEvent(row.Fields)
			if err != nil {
				t.Fatal(err)
			}
			g.revocations.Add(ev)
		case revocation.StreamDelegationInvalidate:
			ev, err := revocation.ParseEpochEvent(row.Fields)
			if err != nil {
				t.Fatal(err)
			}
			g.epochs.Observe(ev)
		}
	}
}

var scopeUniverse = []string{"read", "write", "admin"}

func newGraphEnv(t *testing.T, st store.Store, cached bool) *graphEnv {
	t.Helper()
	var rs *revocation.RevokedSet
	var ep *revocation.Epochs
	e := newEnv(t, st, func(o *Options) {
		if cached {
			rs, ep = revocation.NewRevokedSet(o.Now), new(revocation.Epochs)
			o.Revocations, o.Epochs = rs, ep
		}
	})
	ctx := context.Background()
	var grants []string
	for i := range 8 {
		id := fmt.Sprintf("c%d", i)
		if err := e.store.PutApplication(ctx, store.Application{ZoneID: "demo", ClientID: id, Name: id, SecretHash: testenv.CheapSecretHash("demo-" + id + "-secret")}); err != nil {
			t.Fatal(err)
		}
		if i < 6 {
			grants = append(grants, fmt.Sprintf(`%q:{%q:["read","write"]}`, id, apiResource))
		}
	}
	modules, _ := policies.Default()
	b, err := e.store.PutPolicyBundle(ctx, "demo", modules, []byte(`{"grants":{`+strings.Join(grants, ",")+`}}`), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	installPolicy(t, e.svc, b)
	e.svc.Invalidate("demo")
	g := &graphEnv{env: e, revocations: rs, epochs: ep}
	for i := range 8 {
		tok := e.session("demo", fmt.Sprintf("c%d", i))
		g.tokens = append(g.tokens, tok)
		g.sessions = append(g.sessions, claimsOf(t, tok).SID)
	}
	return g
}

// expectedPath is the test's own reading of docs/protocol.md section 4 at exchange time, written
// independently of resolveDelegation: walk parents with GetEdge, then apply every rule.
func (g *graphEnv) expectedPath(t *testing.T, edgeID, presenter, resource string) ([]store.Edge, bool) {
	t.Helper()
	ctx := context.Background()
	var path []store.Edge
	for id := edgeID; id != ""; {
		e, err := g.store.GetEdge(ctx, "demo", id)
		if err != nil {
			return nil, false
		}
		path = append([]store.Edge{e}, path...)
		id = e.ParentEdgeID
	}
	now := g.clock.Now()
	active := func(sid string) bool {
		s, err := g.store.GetSession(ctx, "demo", sid)
		return err == nil && s.Status == store.StatusActive && now.Before(s.ExpiresAt)
	}
	if path[len(path)-1].TargetSessionID != presenter {
		return nil, false
	}
	for i, e := range path {
		if e.Status != store.StatusActive || !now.Before(e.ExpiresAt) || e.Resource != resource ||
			!active(e.SourceSessionID) || !active(e.TargetSessionID) || len(path)-i > e.MaxHops {
			return nil, false
		}
		if i > 0 {
			p := path[i-1]
			if e.SourceSessionID != p.TargetSessionID {
				return nil, false
			}
			for _, sc := range e.Scopes {
				if !slices.Contains(p.Scopes, sc) {
					return nil, false
				}
			}
		}
	}
	return path, true
}

func (g *graphEnv) clientOf(sid string) string {
	return fmt.Sprintf("c%d", slices.Index(g.sessions, sid))
}

// TestRandomDelegationGraphs builds random trees and chains (random scopes, expiries, hop
// budgets, resources, broken links and revocations, fixed seeds) and checks that a
// delegated mandate is issued exactly when every rule holds, never carries a scope outside
// any edge of its path, and is refused by the STS and by a resource verifier once any
// edge or session on its path is revoked.
func TestRandomDelegationGraphs(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		for _, cached := range []bool{false, true} {
			for seed := range uint64(12) {
				name := fmt.Sprintf("seed %d reading storage", seed)
				if cached {
					name = fmt.Sprintf("seed %d through the revocation set", seed)
				}
				t.Run(name, func(t *testing.T) {
					randomGraphRound(t, newGraphEnv(t, open(), cached), rand.New(rand.NewPCG(seed, 0xcaca1)))
				})
			}
		}
	})
}

func randomGraphRound(t *testing.T, g *graphEnv, rng *rand.Rand) {
	ctx := context.Background()
	now := g.clock.Now()
	var edges []store.Edge
	randomScopes := func(from []string) []string {
		var out []string
		for _, sc := range from {
			if rng.IntN(3) > 0 {
				out = append(out, sc)
			}
		}
		if len(out) == 0 {
			out = []string{from[rng.IntN(len(from))]}
		}
		return out
	}
	for i := range 14 {
		e := store.Edge{ZoneID: "demo", ID: fmt.Sprintf("e%d", i), Resource: apiResource, MaxHops: 1 + rng.IntN(4),
			ExpiresAt: now.Add(time.Duration(rng.IntN(3600)-300) * time.Second)}
		if rng.IntN(10) == 0 {
			e.Resource = mailResource
		}
		if len(edges) > 0 && rng.IntN(3) > 0 {
			p := edges[rng.IntN(len(edges))]
			e.ParentEdgeID = p.ID
			e.SourceSessionID = p.TargetSessionID
			if rng.IntN(8) == 0 { // a broken link
				e.SourceSessionID = g.sessions[rng.IntN(len(g.sessions))]
			}
			e.Scopes = randomScopes(p.Scopes)
			if rng.IntN(6) == 0 { // a widening attempt
				e.Scopes = randomScopes(scopeUniverse)
			}
		} else {
			e.SourceSessionID = g.sessions[rng.IntN(len(g.sessions))]
			e.Scopes = randomScopes(scopeUniverse)
		}
		e.TargetSessionID = g.sessions[rng.IntN(len(g.sessions))]
		created, err := g.store.CreateEdge(ctx, e, nil)
		if err != nil {
			t.Fatalf("creating %s: %v", e.ID, err)
		}
		edges = append(edges, created)
	}
	// Some revocations before any exchange.
	for range 2 {
		if rng.IntN(2) == 0 {
			if _, err := g.store.RevokeEdge(ctx, "demo", edges[rng.IntN(len(edges))].ID, "test", now); err != nil {
				t.Fatal(err)
			}
		}
	}
	if rng.IntN(3) == 0 {
		if _, err := g.store.RevokeSession(ctx, "demo", g.sessions[6+rng.IntN(2)], "test", now); err != nil {
			t.Fatal(err)
		}
	}
	g.svc.Invalidate("demo")
	g.sync(t)

	type issued struct {
		token string
		path  []store.Edge
	}
	var mandates []issued
	for _, e := range edges {
		presenters := []int{slices.Index(g.sessions, e.TargetSessionID), rng.IntN(len(g.sessions))}
		for _, pi := range presenters {
			var requested []string
			if rng.IntN(2) == 0 {
				requested = randomScopes(scopeUniverse)
			}
			form := exchangeForm(g.tokens[pi], "delegation_edge_id", e.ID)
			if requested != nil {
				form.Set("scope", strings.Join(requested, " "))
			}
			rec := g.do(call{path: "/zones/demo/oauth2/token", form: form})

			path, ok := g.expectedPath(t, e.ID, g.sessions[pi], apiResource)
			sessionLive := true
			if s, _ := g.store.GetSession(ctx, "demo", g.sessions[pi]); s.Status != store.StatusActive {
				sessionLive = false
			}
			var leaf store.Edge
			var want []string
			if ok {
				leaf = path[len(path)-1]
				want = leaf.Scopes
				if requested != nil {
					want = requested
					for _, sc := range requested {
						if !slices.Contains(leaf.Scopes, sc) {
							ok = false
						}
					}
				}
				// The default policy grants read and write to c0..c5 only, via the root.
				rootClient := g.clientOf(path[0].SourceSessionID)
				granted := []string{}
				if rootClient < "c6" {
					granted = intersect(want, []string{"read", "write"})
				}
				if len(granted) == 0 {
					ok = false
				}
				want = granted
			}
			ok = ok && sessionLive
			if !ok {
				if rec.Code == http.StatusOK {
					t.Fatalf("edge %s presented by c%d (scopes %v): issued, but a rule is broken; path %+v", e.ID, pi, requested, path)
				}
				continue
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("edge %s presented by c%d (scopes %v): %d %s; every rule holds on %+v", e.ID, pi, requested, rec.Code, rec.Body, path)
			}
			tok := tokenBody(t, rec.Body.Bytes()).AccessToken
			c := claimsOf(t, tok)
			if c.Scope != strings.Join(want, " ") {
				t.Fatalf("scope %q, want %q", c.Scope, strings.Join(want, " "))
			}
			for _, pe := range path {
				for _, sc := range c.Scopes() {
					if !slices.Contains(pe.Scopes, sc) {
						t.Fatalf("scope %s outside edge %s's %v", sc, pe.ID, pe.Scopes)
					}
				}
				if c.Expiry > pe.ExpiresAt.Unix() {
					t.Fatalf("mandate outlives edge %s", pe.ID)
				}
			}
			var ids []string
			var newest int64
			for _, pe := range path {
				ids = append(ids, pe.ID)
				newest = max(newest, pe.Epoch)
			}
			// The stamped epoch is one the path was valid at: no older than its newest
			// edge, no newer than the zone's.
			if zoneEpoch, err := g.store.Epoch(ctx, "demo"); err != nil || c.DelegationGraphEpoch < newest || c.DelegationGraphEpoch > zoneEpoch {
				t.Fatalf("delegation_graph_epoch %d outside [%d, %d] (%v)", c.DelegationGraphEpoch, newest, zoneEpoch, err)
			}
			if !slices.Equal(c.DelegationPath, ids) || c.DelegationEdgeID != e.ID || c.HopCount != len(path) ||
				c.Subject != g.clientOf(path[0].SourceSessionID) || c.RootSID != path[0].SourceSessionID ||
				c.SID != g.sessions[pi] || c.ClientID != fmt.Sprintf("c%d", pi) || c.Act == nil || c.Act.Sub != fmt.Sprintf("c%d", pi) {
				t.Fatalf("claims %+v do not describe path %v", c, ids)
			}
			mandates = append(mandates, issued{token: tok, path: path})
		}
	}

	t.Logf("%d delegated mandates issued", len(mandates))
	// Revoke something on each issued mandate's path; every place must refuse it.
	rs := revocation.NewRevokedSet(g.clock.Now)
	v, err := verify.New(verify.Options{Issuer: testBase + "/zones/demo", Resource: apiResource, Keys: g.svc.Keys("demo"), Revocations: rs, Now: g.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mandates {
		if _, err := v.Verify(ctx, m.token); err != nil {
			t.Fatalf("issued mandate refused before any revocation: %v", err)
		}
	}
	for _, m := range mandates {
		pe := m.path[rng.IntN(len(m.path))]
		switch rng.IntN(3) {
		case 0:
			_, err = g.store.RevokeEdge(ctx, "demo", pe.ID, "test", g.clock.Now())
		case 1:
			_, err = g.store.RevokeSession(ctx, "demo", pe.SourceSessionID, "test", g.clock.Now())
		default:
			_, err = g.store.RevokeSession(ctx, "demo", pe.TargetSessionID, "test", g.clock.Now())
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	g.sync(t)
	pending, err := g.store.PendingOutbox(ctx, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range pending {
		if row.Stream != revocation.StreamSessionsRevoke {
			continue
		}
		ev, err := revocation.ParseEvent(row.Fields)
		if err != nil {
			t.Fatalf("outbox row %v: %v", row.Fields, err)
		}
		rs.Add(ev)
	}
	for _, m := range mandates {
		if _, err := v.Verify(ctx, m.token); err == nil {
			t.Fatalf("mandate on path %v still verifies after a revocation on it", m.path)
		}
		c := claimsOf(t, m.token)
		form := exchangeForm(g.tokens[slices.Index(g.sessions, c.SID)], "delegation_edge_id", c.DelegationEdgeID)
		if rec := g.do(call{path: "/zones/demo/oauth2/token", form: form}); rec.Code == http.StatusOK {
			t.Fatalf("exchange on path %v still succeeds after a revocation on it", m.path)
		}
	}
}
