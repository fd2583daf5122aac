package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// graph is a zone with a live session (mandate and sid) for each test client.
type graph struct {
	*env
	zone string
	tok  map[string]string
	sid  map[string]string
}

func newGraph(t *testing.T, st store.Store, opts ...func(*issuer.Options)) *graph {
	e := newEnv(t, st, opts...)
	g := &graph{env: e, zone: "d", tok: map[string]string{}, sid: map[string]string{}}
	e.seedZone(g.zone)
	for _, c := range clients {
		g.tok[c], g.sid[c] = e.session(g.zone, c)
	}
	return g
}

// edgeBody is a valid request from the caller to target on the api resource.
func (g *graph) edgeBody(target string, extra ...any) map[string]any {
	b := map[string]any{"target_session_id": g.sid[target], "resource": apiResource, "scopes": []string{"read"}, "ttl_seconds": 600}
	for i := 0; i+1 < len(extra); i += 2 {
		b[extra[i].(string)] = extra[i+1]
	}
	return b
}

func (g *graph) path(suffix string) string { return "/v1/zones/" + g.zone + suffix }

func TestCreateRootEdge(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		now := g.clock.Now()
		v := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "scopes", []string{"read", "write"}))
		want := edgeView{
			ID: v.ID, ZoneID: g.zone, SourceSessionID: g.sid["alice"], TargetSessionID: g.sid["bob"], Resource: apiResource,
			Scopes: []string{"read", "write"}, ExpiresAt: timestamp(now.Add(600 * time.Second)), MaxHops: 1, Status: store.StatusActive,
			Epoch: 1, CreatedAt: timestamp(now),
		}
		if !equalJSON(v, want) {
			t.Fatalf("edge = %+v, want %+v", v, want)
		}
		stored := g.edge(g.zone, v.ID)
		if stored.SourceSessionID != g.sid["alice"] || stored.Epoch != 1 || !stored.ExpiresAt.Equal(now.Add(600*time.Second)) {
			t.Fatalf("stored edge = %+v", stored)
		}
		rows := g.pending()
		if len(rows) != 1 || rows[0].Stream != revocation.StreamDelegationInvalidate ||
			!equalJSON(rows[0].Fields, revocation.EpochEvent{ZoneID: g.zone, Epoch: 1, EdgeID: v.ID, Event: revocation.EpochCreate}.Fields()) {
			t.Fatalf("outbox = %+v", rows)
		}
		if g.notified.Load() != 1 {
			t.Fatalf("relay notified %d times, want 1", g.notified.Load())
		}
		audit := g.audit(g.zone)
		if len(audit) == 0 || audit[0].Action != "delegation.create" || audit[0].Actor != g.sid["alice"] || audit[0].Subject != v.ID {
			t.Fatalf("audit = %+v", audit)
		}
	})
}

func TestCreationRules(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		ctx := context.Background()
		now := g.clock.Now()
		// Fixtures: a revoked and an expired session of dave's, and three parents of
		// alice's to bob: a hop budget of 3 on api, of 1 on api, and 3 on mail.
		_, revokedSID := g.session(g.zone, "dave")
		if _, err := st.RevokeSession(ctx, g.zone, revokedSID, "test", now); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateSession(ctx, store.Session{ZoneID: g.zone, ID: "expired-session", ClientID: "dave", CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		wide := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "max_hops", 3))
		narrow := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob"))
		mail := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "resource", mailResource, "scopes", []string{"send"}, "max_hops", 3))
		revoked := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "max_hops", 3))
		if rec := g.do(http.MethodPost, g.path("/delegations/"+revoked.ID+"/revoke"), g.tok["alice"], ""); rec.Code != http.StatusOK {
			t.Fatalf("revoking: %d %s", rec.Code, rec.Body)
		}

		cases := []struct {
			name   string
			source string
			body   map[string]any
			status int
			rule   string
		}{
			{"the target is the source", "alice", g.edgeBody("alice"), 400, "must differ from the source"},
			{"the target session is unknown", "alice", g.edgeBody("", "target_session_id", "no-such-session"), 404, "target session not found"},
			{"the target session is revoked", "alice", g.edgeBody("", "target_session_id", revokedSID), 400, "target session is revoked"},
			{"the target session expired", "alice", g.edgeBody("", "target_session_id", "expired-session"), 400, "target session has expired"},
			{"the resource is not registered", "alice", g.edgeBody("bob", "resource", "https://unknown.test"), 400, "not registered"},
			{"the resource is archived", "alice", g.edgeBody("bob", "resource", oldResource), 400, "archived"},
			{"no scope is asked for", "alice", g.edgeBody("bob", "scopes", []string{}), 400, "at least one scope"},
			{"a scope is listed twice", "alice", g.edgeBody("bob", "scopes", []string{"read", "read"}), 400, "listed twice"},
			{"a scope is not a scope token", "alice", g.edgeBody("bob", "scopes", []string{"re ad"}), 400, "not a valid scope token"},
			{"a scope is not declared by the resource", "alice", g.edgeBody("bob", "scopes", []string{"delete"}), 400, "not declared by the resource"},
			{"ttl_seconds is zero", "alice", g.edgeBody("bob", "ttl_seconds", 0), 400, "ttl_seconds"},
			{"ttl_seconds is negative", "alice", g.edgeBody("bob", "ttl_seconds", -5), 400, "ttl_seconds"},
			{"max_hops is zero", "alice", g.edgeBody("bob", "max_hops", 0), 400, "max_hops must be between 1 and 10"},
			{"max_hops is above 10", "alice", g.edgeBody("bob", "max_hops", 11), 400, "max_hops must be between 1 and 10"},
			{"the parent is unknown", "bob", g.edgeBody("carol", "parent_edge_id", "no-such-edge"), 404, "parent edge not found"},
			{"the parent's target is not the source", "carol", g.edgeBody("dave", "parent_edge_id", wide.ID), 400, "parent edge's target must be this edge's source"},
			{"the parent is on another resource", "bob", g.edgeBody("carol", "parent_edge_id", mail.ID), 400, "parent edge's resource"},
			{"a scope is not granted by the parent", "bob", g.edgeBody("carol", "parent_edge_id", wide.ID, "scopes", []string{"write"}), 400, "not granted by the parent"},
			{"max_hops is not below the parent's", "bob", g.edgeBody("carol", "parent_edge_id", wide.ID, "max_hops", 3), 400, "less than the parent edge's (3)"},
			{"the parent's hop budget is exhausted", "bob", g.edgeBody("carol", "parent_edge_id", narrow.ID), 400, "hop budget is exhausted"},
			{"the parent is revoked", "bob", g.edgeBody("carol", "parent_edge_id", revoked.ID), 400, "parent edge is revoked"},
			{"the target is the parent's source (a cycle)", "bob", g.edgeBody("alice", "parent_edge_id", wide.ID, "max_hops", 2), 400, "cycle"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				epoch, rows, notified := g.epoch(g.zone), len(g.pending()), g.notified.Load()
				rec := g.delegate(g.zone, g.tok[c.source], c.body)
				if c.status == http.StatusNotFound {
					if desc := apiErr(t, rec, http.StatusNotFound, codeNotFound); desc != c.rule {
						t.Fatalf("description %q, want %q", desc, c.rule)
					}
				} else {
					wantRule(t, rec, c.rule)
				}
				if g.epoch(g.zone) != epoch || len(g.pending()) != rows || g.notified.Load() != notified {
					t.Fatal("a refused creation changed the graph, the outbox or notified the relay")
				}
			})
		}

		t.Run("the parent expired", func(t *testing.T) {
			short := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "max_hops", 3, "ttl_seconds", 5))
			g.clock.Advance(6 * time.Second)
			wantRule(t, g.delegate(g.zone, g.tok["bob"], g.edgeBody("carol", "parent_edge_id", short.ID)), "parent edge has expired")
		})
	})
}

func TestExpiryIsClamped(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		// Sessions last an hour from the same instant: a ttl of a year ends with them.
		sess, err := st.GetSession(context.Background(), g.zone, g.sid["alice"])
		if err != nil {
			t.Fatal(err)
		}
		root := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "ttl_seconds", 1<<62, "max_hops", 2))
		if root.ExpiresAt != timestamp(sess.ExpiresAt) {
			t.Fatalf("expires_at = %s, want the source session's expiry %s", root.ExpiresAt, timestamp(sess.ExpiresAt))
		}
		short := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "ttl_seconds", 30, "max_hops", 2))
		child := g.mustDelegate(g.zone, g.tok["bob"], g.edgeBody("carol", "ttl_seconds", 3000, "parent_edge_id", short.ID))
		if child.ExpiresAt != short.ExpiresAt {
			t.Fatalf("child expires_at = %s, want the parent's %s", child.ExpiresAt, short.ExpiresAt)
		}
	})
}

func TestChainOfThree(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		e1 := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "scopes", []string{"read", "write", "admin"}, "max_hops", 3))
		e2 := g.mustDelegate(g.zone, g.tok["bob"], g.edgeBody("carol", "scopes", []string{"read", "write"}, "max_hops", 2, "parent_edge_id", e1.ID))
		e3 := g.mustDelegate(g.zone, g.tok["carol"], g.edgeBody("dave", "scopes", []string{"read"}, "parent_edge_id", e2.ID))
		if e1.Epoch != 1 || e2.Epoch != 2 || e3.Epoch != 3 {
			t.Fatalf("epochs %d %d %d, want 1 2 3", e1.Epoch, e2.Epoch, e3.Epoch)
		}
		if e3.ParentEdgeID == nil || *e3.ParentEdgeID != e2.ID || e3.MaxHops != 1 {
			t.Fatalf("leaf = %+v", e3)
		}
		path, err := st.EdgePath(context.Background(), g.zone, e3.ID)
		if err != nil {
			t.Fatal(err)
		}
		if ids := edgeIDs(path); !slices.Equal(ids, []string{e1.ID, e2.ID, e3.ID}) {
			t.Fatalf("path = %v", ids)
		}

		t.Run("the leaf has no hop left", func(t *testing.T) {
			wantRule(t, g.delegate(g.zone, g.tok["dave"], g.edgeBody("erin", "parent_edge_id", e3.ID)), "hop budget is exhausted")
		})
		t.Run("the target cannot be anyone already on the path", func(t *testing.T) {
			for _, target := range []string{"alice", "bob"} {
				wantRule(t, g.delegate(g.zone, g.tok["carol"], g.edgeBody(target, "parent_edge_id", e2.ID)), "cycle")
			}
		})
		t.Run("the edge is readable by its source, its target and an admin only", func(t *testing.T) {
			readToken, _ := g.mint(g.zone, "read")
			for _, who := range []string{g.tok["carol"], g.tok["dave"], readToken} {
				var v edgeView
				decodeOK(t, g.do(http.MethodGet, g.path("/delegations/"+e3.ID), who, ""), http.StatusOK, &v)
				if !equalJSON(v, e3) {
					t.Fatalf("read %+v, created %+v", v, e3)
				}
			}
			apiErr(t, g.do(http.MethodGet, g.path("/delegations/"+e3.ID), g.tok["alice"], ""), http.StatusForbidden, codeForbidden)
			apiErr(t, g.do(http.MethodGet, g.path("/delegations/no-such-edge"), readToken, ""), http.StatusNotFound, codeNotFound)
		})
		t.Run("the epoch endpoint answers sessions and admins", func(t *testing.T) {
			readToken, _ := g.mint(g.zone, "read")
			globalRead, _ := g.mint("", "read")
			for _, who := range []string{g.tok["erin"], readToken, globalRead, bootstrapToken} {
				var v epochResponse
				decodeOK(t, g.do(http.MethodGet, g.path("/epoch"), who, ""), http.StatusOK, &v)
				if v.Epoch != 3 || v.ZoneID != g.zone {
					t.Fatalf("epoch = %+v, want 3", v)
				}
			}
		})
	})
}

func TestRevokeEdgeCascades(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		e1 := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "max_hops", 3))
		e2 := g.mustDelegate(g.zone, g.tok["bob"], g.edgeBody("carol", "max_hops", 2, "parent_edge_id", e1.ID))
		e3 := g.mustDelegate(g.zone, g.tok["carol"], g.edgeBody("dave", "parent_edge_id", e2.ID))
		side := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("erin"))

		t.Run("the target cannot revoke", func(t *testing.T) {
			apiErr(t, g.do(http.MethodPost, g.path("/delegations/"+e1.ID+"/revoke"), g.tok["bob"], ""), http.StatusForbidden, codeForbidden)
			if g.edge(g.zone, e1.ID).Status != store.StatusActive {
				t.Fatal("the edge was revoked")
			}
		})

		rows, notified := len(g.pending()), g.notified.Load()
		var rev edgeRevocation
		decodeOK(t, g.do(http.MethodPost, g.path("/delegations/"+e1.ID+"/revoke"), g.tok["alice"], `{"reason":"task done"}`), http.StatusOK, &rev)
		if !sameIDs(rev.RevokedEdges, e1.ID, e2.ID, e3.ID) || rev.Epoch != 5 {
			t.Fatalf("revocation = %+v, want the chain at epoch 5", rev)
		}
		for _, id := range []string{e1.ID, e2.ID, e3.ID} {
			if e := g.edge(g.zone, id); e.Status != store.StatusRevoked {
				t.Fatalf("edge %s is %s", id, e.Status)
			}
		}
		if g.edge(g.zone, side.ID).Status != store.StatusActive {
			t.Fatal("an unrelated edge was revoked")
		}
		newRows := g.pending()[rows:]
		if len(newRows) != 6 {
			t.Fatalf("%d outbox rows, want a revocation and an invalidation per edge", len(newRows))
		}
		for _, r := range newRows {
			if r.Stream == revocation.StreamSessionsRevoke && r.Fields["reason"] != "task done" {
				t.Fatalf("row %+v lost the reason", r)
			}
		}
		if g.notified.Load() != notified+1 {
			t.Fatal("the relay was not notified")
		}
		var v edgeView
		decodeOK(t, g.do(http.MethodGet, g.path("/delegations/"+e3.ID), g.tok["dave"], ""), http.StatusOK, &v)
		if v.Status != store.StatusRevoked || v.RevokedAt == "" {
			t.Fatalf("leaf after revocation = %+v", v)
		}

		t.Run("revoking again changes nothing", func(t *testing.T) {
			rows, notified := len(g.pending()), g.notified.Load()
			var again edgeRevocation
			decodeOK(t, g.do(http.MethodPost, g.path("/delegations/"+e1.ID+"/revoke"), g.tok["alice"], ""), http.StatusOK, &again)
			if len(again.RevokedEdges) != 0 || again.Epoch != 5 || len(g.pending()) != rows || g.notified.Load() != notified {
				t.Fatalf("second revocation = %+v", again)
			}
		})
		t.Run("an admin with write can revoke any edge", func(t *testing.T) {
			writeToken, writeID := g.mint(g.zone, "write")
			var r edgeRevocation
			decodeOK(t, g.do(http.MethodPost, g.path("/delegations/"+side.ID+"/revoke"), writeToken, ""), http.StatusOK, &r)
			if !sameIDs(r.RevokedEdges, side.ID) || r.Epoch != 6 {
				t.Fatalf("revocation = %+v", r)
			}
			if a := g.audit(g.zone)[0]; a.Action != "delegation.revoke" || a.Actor != writeID || a.Subject != side.ID {
				t.Fatalf("audit = %+v", a)
			}
		})
		t.Run("an unknown edge is not found", func(t *testing.T) {
			apiErr(t, g.do(http.MethodPost, g.path("/delegations/no-such-edge/revoke"), g.tok["alice"], ""), http.StatusNotFound, codeNotFound)
		})
	})
}

func TestRevokeSessionCascades(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		writeToken, _ := g.mint(g.zone, "write")
		chain := func() []edgeView {
			e1 := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "max_hops", 3))
			e2 := g.mustDelegate(g.zone, g.tok["bob"], g.edgeBody("carol", "max_hops", 2, "parent_edge_id", e1.ID))
			e3 := g.mustDelegate(g.zone, g.tok["carol"], g.edgeBody("dave", "parent_edge_id", e2.ID))
			return []edgeView{e1, e2, e3}
		}

		var first []edgeView
		t.Run("revoking the last target revokes only the leaf", func(t *testing.T) {
			c := chain()
			first = c
			epoch := g.epoch(g.zone)
			var rev sessionRevocation
			decodeOK(t, g.do(http.MethodPost, g.path("/sessions/"+g.sid["dave"]+"/revoke"), writeToken, ""), http.StatusOK, &rev)
			if !sameIDs(rev.RevokedEdges, c[2].ID) || rev.Epoch != epoch+1 {
				t.Fatalf("revocation = %+v", rev)
			}
			if rev.Session.Status != store.StatusRevoked || rev.Session.RevokeReason != reasonAdmin || rev.Session.SID != g.sid["dave"] {
				t.Fatalf("session = %+v", rev.Session)
			}
			if g.edge(g.zone, c[1].ID).Status != store.StatusActive {
				t.Fatal("the parent of the leaf was revoked")
			}
			// The revoked session's mandate no longer works at the Coordinator.
			apiErr(t, g.do(http.MethodGet, g.path("/epoch"), g.tok["dave"], ""), http.StatusUnauthorized, codeInvalidToken)
		})
		t.Run("revoking a middle session revokes the edges it sources and targets and their descendants", func(t *testing.T) {
			g.tok["dave"], g.sid["dave"] = g.session(g.zone, "dave")
			c := chain()
			rows := len(g.pending())
			var rev sessionRevocation
			decodeOK(t, g.do(http.MethodPost, g.path("/sessions/"+g.sid["bob"]+"/revoke"), writeToken, `{"reason":"compromised"}`), http.StatusOK, &rev)
			// bob is also in the first chain, whose leaf is already revoked.
			if !sameIDs(rev.RevokedEdges, c[0].ID, c[1].ID, c[2].ID, first[0].ID, first[1].ID) {
				t.Fatalf("revoked %v, want both chains", rev.RevokedEdges)
			}
			newRows := g.pending()[rows:]
			if len(newRows) != 1+2*5 || newRows[0].Fields["session_id"] != g.sid["bob"] || newRows[0].Fields["reason"] != "compromised" {
				t.Fatalf("outbox rows = %+v", newRows)
			}
			var sv sessionView
			decodeOK(t, g.do(http.MethodGet, g.path("/sessions/"+g.sid["bob"]), writeToken, ""), http.StatusOK, &sv)
			if sv.Status != store.StatusRevoked || sv.RevokedAt == "" || sv.RevokeReason != "compromised" || sv.ClientID != "bob" {
				t.Fatalf("session view = %+v", sv)
			}
		})
		t.Run("revoking a revoked session changes nothing", func(t *testing.T) {
			epoch, rows := g.epoch(g.zone), len(g.pending())
			var rev sessionRevocation
			decodeOK(t, g.do(http.MethodPost, g.path("/sessions/"+g.sid["bob"]+"/revoke"), writeToken, ""), http.StatusOK, &rev)
			if len(rev.RevokedEdges) != 0 || rev.Epoch != epoch || len(g.pending()) != rows || rev.Session.RevokeReason != "compromised" {
				t.Fatalf("revocation = %+v", rev)
			}
		})
		t.Run("an unknown session is not found", func(t *testing.T) {
			apiErr(t, g.do(http.MethodPost, g.path("/sessions/nobody/revoke"), writeToken, ""), http.StatusNotFound, codeNotFound)
			apiErr(t, g.do(http.MethodGet, g.path("/sessions/nobody"), writeToken, ""), http.StatusNotFound, codeNotFound)
		})
		t.Run("an expired session reads as expired", func(t *testing.T) {
			g.clock.Advance(2 * time.Hour)
			var sv sessionView
			decodeOK(t, g.do(http.MethodGet, g.path("/sessions/"+g.sid["erin"]), writeToken, ""), http.StatusOK, &sv)
			if sv.Status != store.StatusExpired {
				t.Fatalf("status = %s, want expired", sv.Status)
			}
		})
	})
}

func TestSourceSessionMustBeLive(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		if _, err := st.RevokeSession(context.Background(), g.zone, g.sid["alice"], "test", g.clock.Now()); err != nil {
			t.Fatal(err)
		}
		apiErr(t, g.delegate(g.zone, g.tok["alice"], g.edgeBody("bob")), http.StatusUnauthorized, codeInvalidToken)
		g.clock.Advance(2 * time.Hour)
		apiErr(t, g.delegate(g.zone, g.tok["bob"], g.edgeBody("carol")), http.StatusUnauthorized, codeInvalidToken)
		if g.epoch(g.zone) != 0 {
			t.Fatal("an edge was created")
		}
	})
}

func TestEpochStrictlyIncreasesUnderConcurrency(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		const workers, each = 8, 5
		epochs := make(chan int64, workers*each)
		var wg sync.WaitGroup
		for i := range workers {
			source := clients[i%2]
			target := clients[2+i%3]
			wg.Go(func() {
				for range each {
					var v edgeView
					rec := g.delegate(g.zone, g.tok[source], g.edgeBody(target))
					if err := json.Unmarshal(rec.Body.Bytes(), &v); rec.Code != http.StatusCreated || err != nil {
						t.Errorf("creating: %d %s", rec.Code, rec.Body)
						return
					}
					epochs <- v.Epoch
				}
			})
		}
		wg.Wait()
		close(epochs)
		var got []int64
		for e := range epochs {
			got = append(got, e)
		}
		slices.Sort(got)
		for i, e := range got {
			if e != int64(i+1) {
				t.Fatalf("epochs %v are not 1..%d each once", got, workers*each)
			}
		}
		if g.epoch(g.zone) != workers*each {
			t.Fatalf("zone epoch = %d", g.epoch(g.zone))
		}
	})
}

func TestSweepExpired(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		short := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "ttl_seconds", 60))
		long := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("carol", "ttl_seconds", 600))
		rows, notified := len(g.pending()), g.notified.Load()

		if err := g.svc.SweepExpired(context.Background()); err != nil {
			t.Fatal(err)
		}
		if g.epoch(g.zone) != 2 || len(g.pending()) != rows || g.notified.Load() != notified {
			t.Fatal("a sweep with nothing expired changed something")
		}

		g.clock.Advance(61 * time.Second)
		var before edgeView
		decodeOK(t, g.do(http.MethodGet, g.path("/delegations/"+short.ID), g.tok["alice"], ""), http.StatusOK, &before)
		if before.Status != store.StatusExpired {
			t.Fatalf("an edge past its expiry reads as %s", before.Status)
		}
		if err := g.svc.SweepExpired(context.Background()); err != nil {
			t.Fatal(err)
		}
		if e := g.edge(g.zone, short.ID); e.Status != store.StatusExpired {
			t.Fatalf("short edge is %s after the sweep", e.Status)
		}
		if e := g.edge(g.zone, long.ID); e.Status != store.StatusActive {
			t.Fatalf("long edge is %s after the sweep", e.Status)
		}
		newRows := g.pending()[rows:]
		if len(newRows) != 1 || !equalJSON(newRows[0].Fields, revocation.EpochEvent{ZoneID: g.zone, Epoch: 3, EdgeID: short.ID, Event: revocation.EpochExpire}.Fields()) {
			t.Fatalf("outbox rows = %+v", newRows)
		}
		if g.epoch(g.zone) != 3 || g.notified.Load() != notified+1 {
			t.Fatalf("epoch %d, notified %d", g.epoch(g.zone), g.notified.Load()-notified)
		}
	})
}

func TestSweepReportsStorageFailure(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		_ = st.Close()
		if err := g.svc.SweepExpired(context.Background()); err == nil {
			t.Fatal("a sweep over a closed store succeeded")
		}
	})
}

// sameIDs reports whether got holds exactly the ids of want, in any order (edges
// created at the same instant are ordered by id).
func sameIDs(got []string, want ...string) bool {
	return len(got) == len(want) && slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
}

// equalJSON compares two values by their JSON encoding.
func equalJSON(a, b any) bool {
	return string(mustJSON(a)) == string(mustJSON(b))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// TestRecheckInsideTransaction changes the graph between the checks on what was read
// and the creating transaction: the store's EdgeCheck must catch it.
func TestRecheckInsideTransaction(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		g := newGraph(t, st)
		ctx := context.Background()
		session := func(client string) store.Session {
			s, err := st.GetSession(ctx, g.zone, g.sid[client])
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		request := func(target, parent string) delegationRequest {
			hops := 1
			return delegationRequest{TargetSessionID: g.sid[target], Resource: apiResource, Scopes: []string{"read"}, TTLSeconds: 60, MaxHops: &hops, ParentEdgeID: parent}
		}
		for _, c := range []struct {
			name    string
			source  string
			req     func() delegationRequest
			change  func()
			status  int
			message string
		}{
			{"the parent is revoked meanwhile", "bob", func() delegationRequest {
				parent := g.mustDelegate(g.zone, g.tok["alice"], g.edgeBody("bob", "max_hops", 3))
				return request("carol", parent.ID)
			}, func() {}, http.StatusBadRequest, "parent edge is revoked"},
			{"the target session is revoked meanwhile", "alice", func() delegationRequest { return request("dave", "") },
				func() { _, _ = st.RevokeSession(ctx, g.zone, g.sid["dave"], "test", g.clock.Now()) }, http.StatusBadRequest, "target session is revoked"},
			{"the source session is revoked meanwhile", "erin", func() delegationRequest { return request("carol", "") },
				func() { _, _ = st.RevokeSession(ctx, g.zone, g.sid["erin"], "test", g.clock.Now()) }, http.StatusUnauthorized, "session is revoked"},
		} {
			t.Run(c.name, func(t *testing.T) {
				req := c.req()
				plan, aerr := g.svc.planEdge(ctx, g.zone, session(c.source), req)
				if aerr != nil {
					t.Fatalf("planning: %v", aerr)
				}
				c.change()
				if req.ParentEdgeID != "" {
					if _, err := st.RevokeEdge(ctx, g.zone, req.ParentEdgeID, "test", g.clock.Now()); err != nil {
						t.Fatal(err)
					}
				}
				epoch := g.epoch(g.zone)
				_, err := st.CreateEdge(ctx, plan.edge, plan.recheck(g.clock.Now))
				var got *apiError
				if !errors.As(err, &got) || got.Status != c.status || !strings.Contains(got.Description, c.message) {
					t.Fatalf("creation error %v, want %d %q", err, c.status, c.message)
				}
				if g.epoch(g.zone) != epoch {
					t.Fatal("the refused edge bumped the epoch")
				}
				if _, err := st.GetEdge(ctx, g.zone, plan.edge.ID); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("the refused edge was stored: %v", err)
				}
			})
		}
	})
}
