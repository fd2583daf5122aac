package control

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
)

// access is who an endpoint admits.
type access int

const (
	globalWrite   access = iota // global admin token, write
	adminWrite                  // admin token of the zone (or global), write
	adminRead                   // admin token of the zone (or global), read
	sourceSession               // the source session's mandate only
	sessionWrite                // a session mandate, or an admin token with write
	sessionRead                 // a session mandate, or an admin token with read
)

type endpoint struct {
	name   string
	method string
	path   string // {zone} is replaced by the zone under test
	body   string
	access access
}

// snapshot is everything an endpoint could change, read straight from storage.
type snapshot struct {
	Zones     []store.Zone
	Epochs    map[string]int64
	Sessions  map[string]*store.Session
	Edges     map[string]*store.Edge
	Resources map[string]*store.Resource
	Apps      map[string]*store.Application
	Pending   []store.OutboxEvent
	Policies  map[string]int64
	Keys      map[string][]string
	Audit     map[string][]store.AuditEvent
	Victim    store.AdminToken
}

// isolationFixture is zone a (alice's session s1 delegating to bob's s2 as edge e1) and
// zone b, with admin tokens of every kind.
type isolationFixture struct {
	e                       *env
	s1, s2, e1              string
	aliceA, aliceB          string // session mandates of alice in zones a and b
	aWrite, aRead, aRevoked string
	bWrite, globalRead      string
	victim, victimID        string
}

func newIsolationFixture(t *testing.T, st store.Store) *isolationFixture {
	e := newEnv(t, st)
	e.seedZone("a")
	e.seedZone("b")
	f := &isolationFixture{e: e}
	f.aliceA, f.s1 = e.session("a", "alice")
	_, f.s2 = e.session("a", "bob")
	f.aliceB, _ = e.session("b", "alice")
	f.e1 = e.mustDelegate("a", f.aliceA, map[string]any{"target_session_id": f.s2, "resource": apiResource, "scopes": []string{"read"}, "ttl_seconds": 600, "max_hops": 3}).ID
	f.aWrite, _ = e.mint("a", "write")
	f.aRead, _ = e.mint("a", "read")
	f.bWrite, _ = e.mint("b", "write")
	f.globalRead, _ = e.mint("", "read")
	var revokedID string
	f.aRevoked, revokedID = e.mint("a", "write")
	if rec := e.do(http.MethodPost, "/v1/admin-tokens/"+revokedID+"/revoke", bootstrapToken, ""); rec.Code != http.StatusOK {
		t.Fatalf("revoking an admin token: %d %s", rec.Code, rec.Body)
	}
	f.victim, f.victimID = e.mint("a", "write")
	return f
}

func (f *isolationFixture) endpoints() []endpoint {
	policyBody, _ := json.Marshal(map[string]any{"modules": defaultModules(), "data": grants(`"bob":{"` + apiResource + `":["read"]}`)})
	return []endpoint{
		{"create zone", http.MethodPost, "/v1/zones", `{"id":"newzone","name":"new"}`, globalWrite},
		{"mint admin token", http.MethodPost, "/v1/admin-tokens", `{"zone_id":"a","capability":"write"}`, globalWrite},
		{"revoke admin token", http.MethodPost, "/v1/admin-tokens/" + f.victimID + "/revoke", "", globalWrite},
		{"register application", http.MethodPost, "/v1/zones/{zone}/applications", `{"client_id":"newapp","name":"new app"}`, adminWrite},
		{"register resource", http.MethodPost, "/v1/zones/{zone}/resources", `{"identifier":"https://new.test","scopes":["x"]}`, adminWrite},
		{"upload policy", http.MethodPut, "/v1/zones/{zone}/policy", string(policyBody), adminWrite},
		{"rotate key", http.MethodPost, "/v1/zones/{zone}/keys/rotate", "", adminWrite},
		{"read session", http.MethodGet, "/v1/zones/{zone}/sessions/" + f.s1, "", adminRead},
		{"create delegation", http.MethodPost, "/v1/zones/{zone}/delegations",
			`{"target_session_id":"` + f.s2 + `","resource":"` + apiResource + `","scopes":["read"],"ttl_seconds":60}`, sourceSession},
		{"read delegation", http.MethodGet, "/v1/zones/{zone}/delegations/" + f.e1, "", sessionRead},
		{"read epoch", http.MethodGet, "/v1/zones/{zone}/epoch", "", sessionRead},
		{"revoke delegation", http.MethodPost, "/v1/zones/{zone}/delegations/" + f.e1 + "/revoke", "", sessionWrite},
		{"revoke session", http.MethodPost, "/v1/zones/{zone}/sessions/" + f.s2 + "/revoke", "", adminWrite},
	}
}

func (f *isolationFixture) snapshot(t *testing.T) snapshot {
	t.Helper()
	ctx := context.Background()
	st := f.e.st
	s := snapshot{
		Epochs: map[string]int64{}, Sessions: map[string]*store.Session{}, Edges: map[string]*store.Edge{},
		Resources: map[string]*store.Resource{}, Apps: map[string]*store.Application{}, Policies: map[string]int64{},
		Keys: map[string][]string{}, Audit: map[string][]store.AuditEvent{},
	}
	var err error
	if s.Zones, err = st.ListZones(ctx); err != nil {
		t.Fatal(err)
	}
	// lookup keeps what exists and records nil for what does not; anything else fails.
	lookup := func(err error) bool {
		if errors.Is(err, store.ErrNotFound) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	}
	for _, z := range []string{"a", "b", "ghost", "newzone"} {
		if n, err := st.Epoch(ctx, z); lookup(err) {
			s.Epochs[z] = n
		}
		if b, err := st.ActivePolicyBundle(ctx, z); lookup(err) {
			s.Policies[z] = b.Version
		}
		if keys, err := st.SigningKeys(ctx, z, f.e.clock.Now()); lookup(err) {
			for _, k := range keys {
				s.Keys[z] = append(s.Keys[z], k.KID+"/"+k.Status)
			}
		}
		for _, sid := range []string{f.s1, f.s2} {
			if sess, err := st.GetSession(ctx, z, sid); lookup(err) {
				s.Sessions[z+"/"+sid] = &sess
			}
		}
		if edge, err := st.GetEdge(ctx, z, f.e1); lookup(err) {
			s.Edges[z+"/"+f.e1] = &edge
		}
		for _, id := range []string{"https://new.test", apiResource} {
			if r, err := st.GetResource(ctx, z, id); lookup(err) {
				s.Resources[z+"/"+id] = &r
			}
		}
		for _, id := range []string{"newapp", "alice"} {
			if a, err := st.GetApplication(ctx, z, id); lookup(err) {
				s.Apps[z+"/"+id] = &a
			}
		}
	}
	for _, z := range []string{"", "a", "b", "ghost", "newzone"} {
		if s.Audit[z], err = st.ListAudit(ctx, z, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if s.Pending, err = st.PendingOutbox(ctx, 10_000); err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte(f.victim))
	if s.Victim, err = st.AdminTokenByHash(ctx, hash[:]); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestZoneIsolation runs every endpoint with every kind of credential that must be
// refused and checks the answer and that storage did not change; then it runs every
// endpoint with a credential that must be accepted, so the bodies above are proven valid.
func TestZoneIsolation(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		f := newIsolationFixture(t, st)
		before := f.snapshot(t)
		notifiedBefore := f.e.notified.Load()

		type attempt struct {
			name   string
			zone   string
			token  string
			status int
			code   string
		}
		for _, ep := range f.endpoints() {
			global := !strings.Contains(ep.path, "{zone}")
			zones := []string{"a", "ghost"}
			if global {
				zones = []string{""}
			}
			var attempts []attempt
			for _, z := range zones {
				attempts = append(attempts,
					attempt{"a token of another zone", z, f.bWrite, http.StatusForbidden, codeZoneForbidden},
					attempt{"a revoked token", z, f.aRevoked, http.StatusUnauthorized, codeInvalidToken},
					attempt{"no token", z, "", http.StatusUnauthorized, codeInvalidToken},
					attempt{"an unknown token", z, "cat_not-a-token-anyone-minted", http.StatusUnauthorized, codeInvalidToken},
				)
				switch ep.access {
				case globalWrite:
					attempts = append(attempts,
						attempt{"a global read token on a write", z, f.globalRead, http.StatusForbidden, codeForbidden},
						attempt{"a token of the zone on a global endpoint", z, f.aWrite, http.StatusForbidden, codeZoneForbidden},
						attempt{"a session mandate", z, f.aliceA, http.StatusUnauthorized, codeInvalidToken})
				case adminWrite:
					attempts = append(attempts,
						attempt{"a read token on a write", z, f.aRead, http.StatusForbidden, codeForbidden},
						attempt{"a session mandate", z, f.aliceA, http.StatusUnauthorized, codeInvalidToken})
				case adminRead:
					attempts = append(attempts, attempt{"a session mandate", z, f.aliceA, http.StatusUnauthorized, codeInvalidToken})
				case sourceSession:
					attempts = append(attempts,
						attempt{"a read token", z, f.aRead, http.StatusForbidden, codeForbidden},
						attempt{"a write admin token", z, f.aWrite, http.StatusForbidden, codeForbidden},
						attempt{"a session mandate of another zone", z, f.aliceB, http.StatusUnauthorized, codeInvalidToken})
				case sessionWrite:
					attempts = append(attempts,
						attempt{"a read token on a write", z, f.aRead, http.StatusForbidden, codeForbidden},
						attempt{"a session mandate of another zone", z, f.aliceB, http.StatusUnauthorized, codeInvalidToken})
				case sessionRead:
					attempts = append(attempts, attempt{"a session mandate of another zone", z, f.aliceB, http.StatusUnauthorized, codeInvalidToken})
				}
			}
			for _, a := range attempts {
				if a.zone == "ghost" && (a.token == f.aRead || a.token == f.aWrite) {
					// A token of zone a is out of its scope on any other zone.
					a.status, a.code = http.StatusForbidden, codeZoneForbidden
				}
				name := ep.name + " with " + a.name
				if a.zone != "" {
					name += " on zone " + a.zone
				}
				t.Run(name, func(t *testing.T) {
					rec := f.e.do(ep.method, strings.ReplaceAll(ep.path, "{zone}", a.zone), a.token, ep.body)
					apiErr(t, rec, a.status, a.code)
					if a.token == "" && strings.Contains(rec.Header().Get("WWW-Authenticate"), "error=") {
						t.Fatalf("a request without a token got error attributes: %q", rec.Header().Get("WWW-Authenticate"))
					}
					if after := f.snapshot(t); !reflect.DeepEqual(before, after) {
						t.Fatalf("storage changed:\nbefore %+v\nafter  %+v", before, after)
					}
					if n := f.e.notified.Load(); n != notifiedBefore {
						t.Fatalf("the relay was notified %d times", n-notifiedBefore)
					}
				})
			}
		}

		t.Run("a global admin gets not_found for an unknown zone", func(t *testing.T) {
			for _, ep := range f.endpoints() {
				if !strings.Contains(ep.path, "{zone}") || ep.access == sourceSession {
					continue
				}
				apiErr(t, f.e.do(ep.method, strings.ReplaceAll(ep.path, "{zone}", "ghost"), bootstrapToken, ep.body), http.StatusNotFound, codeNotFound)
			}
			if after := f.snapshot(t); !reflect.DeepEqual(before, after) {
				t.Fatalf("storage changed:\nbefore %+v\nafter  %+v", before, after)
			}
		})

		t.Run("the right credential is accepted on every endpoint", func(t *testing.T) {
			for _, ep := range f.endpoints() {
				token := map[access]string{globalWrite: bootstrapToken, adminWrite: f.aWrite, adminRead: f.aRead,
					sourceSession: f.aliceA, sessionWrite: f.aliceA, sessionRead: f.aliceA}[ep.access]
				rec := f.e.do(ep.method, strings.ReplaceAll(ep.path, "{zone}", "a"), token, ep.body)
				if rec.Code != http.StatusOK && rec.Code != http.StatusCreated {
					t.Fatalf("%s: %d %s", ep.name, rec.Code, rec.Body)
				}
			}
			if after := f.snapshot(t); reflect.DeepEqual(before, after) {
				t.Fatal("accepted writes changed nothing in storage")
			}
		})
	})
}
