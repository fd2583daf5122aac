// Package storetest is the contract suite of store.Store. Every implementation runs it
// unchanged, so the in-memory store and the PostgreSQL store behave the same way:
//
//	func TestContract(t *testing.T) { storetest.Run(t, openStore) }
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// Run runs the contract suite. open must return a new, empty store for each call; the
// suite closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"zones", testZones},
		{"applications", testApplications},
		{"resources", testResources},
		{"signing keys", testSigningKeys},
		{"key rotation modes", testKeyRotationModes},
		{"policy bundles", testPolicyBundles},
		{"sessions", testSessions},
		{"revoking a session", testRevokeSession},
		{"creating an edge", testCreateEdge},
		{"edge paths", testEdgePath},
		{"revoking an edge", testRevokeEdge},
		{"expiring edges", testExpireEdges},
		{"concurrent graph changes", testConcurrentEpoch},
		{"concurrent session grants", testConcurrentSessions},
		{"outbox", testOutbox},
		{"outbox claims by concurrent relays", testClaimConcurrent},
		{"outbox claim leases", testClaimLease},
		{"outbox watermark and backlog", testOutboxWatermark},
		{"purging the outbox", testPurgeOutbox},
		{"live revocations", testLiveRevocations},
		{"purging expired records", testPurgeExpired},
		{"admin tokens", testAdminTokens},
		{"audit", testAudit},
		{"close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tt.fn(t, s)
		})
	}
}

// base is the suite's reference time: away from UTC and with nanoseconds, so every
// test also checks that times come back in UTC truncated to microseconds.
var base = time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("UTC+2", 2*3600))

// norm is how a stored time comes back.
func norm(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

func ms(t time.Time) string {
	return strconv.FormatInt(t.UnixMilli(), 10)
}

const (
	resourceID = "https://api.example.com/"
	clientID   = "agent"
)

func wantErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func equal(t *testing.T, got, want any, what string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func key(kid string) store.SigningKey {
	return store.SigningKey{KID: kid, Sealed: []byte("sealed-" + kid), PublicJWK: []byte(`{"kid":"` + kid + `"}`), CreatedAt: base}
}

func createZone(t *testing.T, s store.Store, id string) {
	t.Helper()
	must(t, s.CreateZone(t.Context(), store.Zone{ID: id, Name: "Zone " + id, CreatedAt: base}, key("k-"+id)), "creating zone "+id)
}

// graphZone creates a zone with an application, a resource and the given sessions.
func graphZone(t *testing.T, s store.Store, id string, sids ...string) {
	t.Helper()
	ctx := t.Context()
	createZone(t, s, id)
	must(t, s.CreateApplication(ctx, store.Application{ZoneID: id, ClientID: clientID, Name: "Agent", SecretHash: "$argon2id$x", CreatedAt: base}), "creating application")
	must(t, s.CreateResource(ctx, store.Resource{ZoneID: id, ID: "r1", Identifier: resourceID, Scopes: []string{"read", "write"}, CreatedAt: base}), "creating resource")
	for _, sid := range sids {
		must(t, s.CreateSession(ctx, store.Session{ZoneID: id, ID: sid, ClientID: clientID, CreatedAt: base, ExpiresAt: base.Add(time.Hour)}), "creating session "+sid)
	}
}

// edge describes an edge created at base+offset, expiring an hour later.
func edge(zone, id, source, target, parent string, offset time.Duration) store.Edge {
	return store.Edge{
		ZoneID: zone, ID: id, SourceSessionID: source, TargetSessionID: target, Resource: resourceID,
		Scopes: []string{"read"}, ExpiresAt: base.Add(offset + time.Hour), MaxHops: 3, ParentEdgeID: parent,
		CreatedAt: base.Add(offset),
	}
}

func createEdge(t *testing.T, s store.Store, e store.Edge) store.Edge {
	t.Helper()
	got, err := s.CreateEdge(t.Context(), e, nil)
	must(t, err, "creating edge "+e.ID)
	return got
}

// pending returns the zone's unpublished outbox rows, oldest first.
func pending(t *testing.T, s store.Store, zone string) []store.OutboxEvent {
	t.Helper()
	all, err := s.PendingOutbox(t.Context(), 10000)
	must(t, err, "reading pending outbox")
	var out []store.OutboxEvent
	for _, e := range all {
		if e.ZoneID == zone {
			out = append(out, e)
		}
	}
	return out
}

// outboxShape is an outbox row without its id and creation time.
type outboxShape struct {
	Stream string
	Fields map[string]string
}

func shapes(rows []store.OutboxEvent) []outboxShape {
	out := make([]outboxShape, len(rows))
	for i, r := range rows {
		out[i] = outboxShape{r.Stream, r.Fields}
	}
	return out
}

func edgeRevoked(zone, edgeID, reason string, at, expires time.Time) outboxShape {
	return outboxShape{revocation.StreamSessionsRevoke, map[string]string{
		"zone_id": zone, "delegation_edge_id": edgeID, "reason": reason, "revoked_at": ms(at), "expires_at": ms(expires),
	}}
}

func invalidated(zone string, epoch int64, edgeID, event string) outboxShape {
	return outboxShape{revocation.StreamDelegationInvalidate, map[string]string{
		"zone_id": zone, "epoch": strconv.FormatInt(epoch, 10), "edge_id": edgeID, "event": event,
	}}
}

func ids(edges []store.Edge) []string {
	out := make([]string, len(edges))
	for i, e := range edges {
		out[i] = e.ID
	}
	return out
}

func testZones(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, s.CreateZone(ctx, store.Zone{ID: "b", Name: "Bravo", Epoch: 42, CreatedAt: base}, key("kb")), "creating zone")
	createZone(t, s, "a")

	t.Run("a zone reads back normalised with epoch zero", func(t *testing.T) {
		z, err := s.GetZone(ctx, "b")
		must(t, err, "GetZone")
		equal(t, z, store.Zone{ID: "b", Name: "Bravo", Epoch: 0, CreatedAt: norm(base)}, "zone")
		epoch, err := s.Epoch(ctx, "b")
		must(t, err, "Epoch")
		equal(t, epoch, int64(0), "epoch")
	})
	t.Run("an existing zone id conflicts", func(t *testing.T) {
		wantErr(t, s.CreateZone(ctx, store.Zone{ID: "a", Name: "again"}, key("k-other")), store.ErrConflict, "CreateZone twice")
		z, err := s.GetZone(ctx, "a")
		must(t, err, "GetZone")
		equal(t, z.Name, "Zone a", "name after the refused create")
	})
	t.Run("a missing zone is not found", func(t *testing.T) {
		_, err := s.GetZone(ctx, "nope")
		wantErr(t, err, store.ErrNotFound, "GetZone")
		_, err = s.Epoch(ctx, "nope")
		wantErr(t, err, store.ErrNotFound, "Epoch")
	})
	t.Run("zones are listed by id", func(t *testing.T) {
		zones, err := s.ListZones(ctx)
		must(t, err, "ListZones")
		var got []string
		for _, z := range zones {
			got = append(got, z.ID)
		}
		equal(t, got, []string{"a", "b"}, "zone ids")
	})
	t.Run("a signing key of another zone is refused", func(t *testing.T) {
		k := key("k-c")
		k.ZoneID = "other"
		if err := s.CreateZone(ctx, store.Zone{ID: "c", Name: "C"}, k); err == nil {
			t.Fatal("CreateZone accepted a key of another zone")
		}
		_, err := s.GetZone(ctx, "c")
		wantErr(t, err, store.ErrNotFound, "GetZone after the refused create")
	})
	t.Run("a zero creation time becomes the current time", func(t *testing.T) {
		must(t, s.CreateZone(ctx, store.Zone{ID: "d", Name: "D"}, store.SigningKey{KID: "kd"}), "CreateZone")
		z, err := s.GetZone(ctx, "d")
		must(t, err, "GetZone")
		if z.CreatedAt.IsZero() || z.CreatedAt != norm(z.CreatedAt) {
			t.Fatalf("CreatedAt = %v, want a non-zero UTC time in microseconds", z.CreatedAt)
		}
	})
}

func testApplications(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	createZone(t, s, "b")
	app := store.Application{ZoneID: "a", ClientID: "c1", Name: "One", SecretHash: "$argon2id$a", CreatedAt: base}
	must(t, s.CreateApplication(ctx, app), "CreateApplication")

	t.Run("an application reads back", func(t *testing.T) {
		got, err := s.GetApplication(ctx, "a", "c1")
		must(t, err, "GetApplication")
		want := app
		want.CreatedAt = norm(base)
		equal(t, got, want, "application")
	})
	t.Run("an existing client id conflicts", func(t *testing.T) {
		wantErr(t, s.CreateApplication(ctx, store.Application{ZoneID: "a", ClientID: "c1", Name: "dup"}), store.ErrConflict, "CreateApplication twice")
	})
	t.Run("a missing zone or application is not found", func(t *testing.T) {
		wantErr(t, s.CreateApplication(ctx, store.Application{ZoneID: "nope", ClientID: "c1"}), store.ErrNotFound, "CreateApplication in a missing zone")
		wantErr(t, s.PutApplication(ctx, store.Application{ZoneID: "nope", ClientID: "c1"}), store.ErrNotFound, "PutApplication in a missing zone")
		_, err := s.GetApplication(ctx, "a", "nope")
		wantErr(t, err, store.ErrNotFound, "GetApplication")
	})
	t.Run("the same client id in another zone is another application", func(t *testing.T) {
		must(t, s.CreateApplication(ctx, store.Application{ZoneID: "b", ClientID: "c1", Name: "Other", SecretHash: "$argon2id$b", CreatedAt: base}), "CreateApplication in zone b")
		got, err := s.GetApplication(ctx, "b", "c1")
		must(t, err, "GetApplication b")
		equal(t, got.Name, "Other", "zone b's application")
		got, err = s.GetApplication(ctx, "a", "c1")
		must(t, err, "GetApplication a")
		equal(t, got.Name, "One", "zone a's application")
		_, err = s.GetApplication(ctx, "b", "only-a")
		wantErr(t, err, store.ErrNotFound, "reading zone a's id through zone b")
	})
	t.Run("put replaces name, hash and disabled flag but keeps the creation time", func(t *testing.T) {
		must(t, s.PutApplication(ctx, store.Application{ZoneID: "a", ClientID: "c1", Name: "Renamed", SecretHash: "$argon2id$new", Disabled: true, CreatedAt: base.Add(time.Hour)}), "PutApplication")
		got, err := s.GetApplication(ctx, "a", "c1")
		must(t, err, "GetApplication")
		equal(t, got, store.Application{ZoneID: "a", ClientID: "c1", Name: "Renamed", SecretHash: "$argon2id$new", Disabled: true, CreatedAt: norm(base)}, "replaced application")
	})
	t.Run("put creates a missing application", func(t *testing.T) {
		must(t, s.PutApplication(ctx, store.Application{ZoneID: "a", ClientID: "c2", Name: "Two", CreatedAt: base}), "PutApplication")
		got, err := s.GetApplication(ctx, "a", "c2")
		must(t, err, "GetApplication")
		equal(t, got.Name, "Two", "created application")
	})
}

func testResources(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	createZone(t, s, "b")
	scopes := []string{"read", "write"}
	r := store.Resource{ZoneID: "a", ID: "r1", Identifier: resourceID, Scopes: scopes, CreatedAt: base}
	must(t, s.CreateResource(ctx, r), "CreateResource")
	scopes[0] = "mutated"

	t.Run("a resource reads back by identifier, unaffected by the caller's slice", func(t *testing.T) {
		got, err := s.GetResource(ctx, "a", resourceID)
		must(t, err, "GetResource")
		equal(t, got, store.Resource{ZoneID: "a", ID: "r1", Identifier: resourceID, Scopes: []string{"read", "write"}, CreatedAt: norm(base)}, "resource")
		got.Scopes[1] = "mutated"
		again, err := s.GetResource(ctx, "a", resourceID)
		must(t, err, "GetResource")
		equal(t, again.Scopes, []string{"read", "write"}, "scopes after mutating a returned slice")
	})
	t.Run("an existing identifier or id conflicts", func(t *testing.T) {
		wantErr(t, s.CreateResource(ctx, store.Resource{ZoneID: "a", ID: "r2", Identifier: resourceID}), store.ErrConflict, "same identifier")
		wantErr(t, s.CreateResource(ctx, store.Resource{ZoneID: "a", ID: "r1", Identifier: "https://other.example/"}), store.ErrConflict, "same id")
	})
	t.Run("a missing zone or resource is not found", func(t *testing.T) {
		wantErr(t, s.CreateResource(ctx, store.Resource{ZoneID: "nope", ID: "r1", Identifier: resourceID}), store.ErrNotFound, "CreateResource")
		wantErr(t, s.PutResource(ctx, store.Resource{ZoneID: "nope", ID: "r1", Identifier: resourceID}), store.ErrNotFound, "PutResource")
		_, err := s.GetResource(ctx, "a", "https://missing.example/")
		wantErr(t, err, store.ErrNotFound, "GetResource")
	})
	t.Run("the same id and identifier in another zone is another resource", func(t *testing.T) {
		must(t, s.CreateResource(ctx, store.Resource{ZoneID: "b", ID: "r1", Identifier: resourceID, Scopes: []string{"admin"}, CreatedAt: base}), "CreateResource in zone b")
		got, err := s.GetResource(ctx, "b", resourceID)
		must(t, err, "GetResource b")
		equal(t, got.Scopes, []string{"admin"}, "zone b's scopes")
		got, err = s.GetResource(ctx, "a", resourceID)
		must(t, err, "GetResource a")
		equal(t, got.Scopes, []string{"read", "write"}, "zone a's scopes")
	})
	t.Run("put replaces scopes and archived flag by identifier", func(t *testing.T) {
		must(t, s.PutResource(ctx, store.Resource{ZoneID: "a", ID: "ignored", Identifier: resourceID, Scopes: []string{"read"}, Archived: true}), "PutResource")
		got, err := s.GetResource(ctx, "a", resourceID)
		must(t, err, "GetResource")
		equal(t, got, store.Resource{ZoneID: "a", ID: "r1", Identifier: resourceID, Scopes: []string{"read"}, Archived: true, CreatedAt: norm(base)}, "replaced resource")
	})
	t.Run("put creates a missing resource but not over another's id", func(t *testing.T) {
		must(t, s.PutResource(ctx, store.Resource{ZoneID: "a", ID: "r3", Identifier: "https://three.example/", CreatedAt: base}), "PutResource")
		got, err := s.GetResource(ctx, "a", "https://three.example/")
		must(t, err, "GetResource")
		if got.ID != "r3" || got.Scopes == nil || len(got.Scopes) != 0 {
			t.Fatalf("created resource = %+v, want id r3 with an empty, non-nil scope list", got)
		}
		wantErr(t, s.PutResource(ctx, store.Resource{ZoneID: "a", ID: "r3", Identifier: "https://four.example/"}), store.ErrConflict, "PutResource reusing an id")
	})
	t.Run("zone scopes are the sorted union of the unarchived resources' scopes", func(t *testing.T) {
		createZone(t, s, "scopes")
		got, err := s.ZoneScopes(ctx, "scopes")
		must(t, err, "ZoneScopes of an empty zone")
		if got == nil || len(got) != 0 {
			t.Fatalf("ZoneScopes of a zone without resources = %#v, want an empty, non-nil list", got)
		}
		must(t, s.CreateResource(ctx, store.Resource{ZoneID: "scopes", ID: "r1", Identifier: "https://one.example/", Scopes: []string{"write", "read"}}), "CreateResource one")
		must(t, s.CreateResource(ctx, store.Resource{ZoneID: "scopes", ID: "r2", Identifier: "https://two.example/", Scopes: []string{"read", "admin"}}), "CreateResource two")
		must(t, s.CreateResource(ctx, store.Resource{ZoneID: "scopes", ID: "r3", Identifier: "https://old.example/", Scopes: []string{"legacy"}, Archived: true}), "CreateResource archived")
		got, err = s.ZoneScopes(ctx, "scopes")
		must(t, err, "ZoneScopes")
		equal(t, got, []string{"admin", "read", "write"}, "zone scopes")
		got, err = s.ZoneScopes(ctx, "b")
		must(t, err, "ZoneScopes b")
		equal(t, got, []string{"admin"}, "zone b's scopes")
		_, err = s.ZoneScopes(ctx, "nope")
		wantErr(t, err, store.ErrNotFound, "ZoneScopes of a missing zone")
	})
}

func testSigningKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	createZone(t, s, "b")
	now := base.Add(time.Hour)
	until := now.Add(15 * time.Minute)

	t.Run("a new zone has its first key, active", func(t *testing.T) {
		keys, err := s.SigningKeys(ctx, "a", base)
		must(t, err, "SigningKeys")
		want := key("k-a")
		want.ZoneID, want.Status, want.CreatedAt = "a", store.StatusActive, norm(base)
		equal(t, keys, []store.SigningKey{want}, "keys")
		keys[0].Sealed[0] = 'X'
		keys[0].PublicJWK[0] = 'X'
		again, err := s.SigningKeys(ctx, "a", base)
		must(t, err, "SigningKeys")
		equal(t, again, []store.SigningKey{want}, "keys after mutating returned bytes")
	})
	t.Run("rotation retires the active key until retireUntil", func(t *testing.T) {
		next := key("k-a2")
		must(t, s.RotateSigningKey(ctx, "a", next, rotateAt(now, until)), "RotateSigningKey")
		next.Sealed[0] = 'X'
		keys, err := s.SigningKeys(ctx, "a", now)
		must(t, err, "SigningKeys")
		wantNext := key("k-a2")
		wantNext.ZoneID, wantNext.Status, wantNext.CreatedAt = "a", store.StatusActive, norm(base)
		wantOld := key("k-a")
		wantOld.ZoneID, wantOld.Status, wantOld.CreatedAt = "a", store.StatusRetired, norm(base)
		wantOld.RetiredAt, wantOld.NotAfter = norm(now), norm(until)
		equal(t, keys, []store.SigningKey{wantNext, wantOld}, "keys after rotation")

		atEnd, err := s.SigningKeys(ctx, "a", until)
		must(t, err, "SigningKeys at NotAfter")
		equal(t, atEnd, []store.SigningKey{wantNext}, "keys once NotAfter is reached")
	})
	t.Run("retired keys come newest first after the active one", func(t *testing.T) {
		later := now.Add(time.Minute)
		must(t, s.RotateSigningKey(ctx, "a", key("k-a3"), rotateAt(later, later.Add(time.Hour))), "RotateSigningKey")
		keys, err := s.SigningKeys(ctx, "a", later)
		must(t, err, "SigningKeys")
		var kids []string
		for _, k := range keys {
			kids = append(kids, k.KID+"/"+k.Status)
		}
		equal(t, kids, []string{"k-a3/active", "k-a2/retired", "k-a/retired"}, "key order")
	})
	t.Run("an existing kid conflicts and changes nothing", func(t *testing.T) {
		wantErr(t, s.RotateSigningKey(ctx, "a", key("k-a2"), rotateAt(now, until)), store.ErrConflict, "RotateSigningKey to a used kid")
		keys, err := s.SigningKeys(ctx, "a", now)
		must(t, err, "SigningKeys")
		equal(t, keys[0].KID, "k-a3", "active key after the refused rotation")
	})
	t.Run("a missing zone is not found and a foreign key is refused", func(t *testing.T) {
		_, err := s.SigningKeys(ctx, "nope", now)
		wantErr(t, err, store.ErrNotFound, "SigningKeys")
		wantErr(t, s.RotateSigningKey(ctx, "nope", key("k-x"), rotateAt(now, until)), store.ErrNotFound, "RotateSigningKey")
		k := key("k-y")
		k.ZoneID = "b"
		if err := s.RotateSigningKey(ctx, "a", k, rotateAt(now, until)); err == nil {
			t.Fatal("RotateSigningKey accepted a key of zone b into zone a")
		}
	})
	t.Run("another zone's keys stay apart", func(t *testing.T) {
		keys, err := s.SigningKeys(ctx, "b", now)
		must(t, err, "SigningKeys")
		if len(keys) != 1 || keys[0].KID != "k-b" || keys[0].ZoneID != "b" {
			t.Fatalf("zone b keys = %+v, want only k-b", keys)
		}
	})
}

func testPolicyBundles(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	createZone(t, s, "b")

	t.Run("a zone without bundle has none active", func(t *testing.T) {
		_, err := s.ActivePolicyBundle(ctx, "a")
		wantErr(t, err, store.ErrNotFound, "ActivePolicyBundle")
	})
	modules := map[string]string{"authz.rego": "package caracal.authz\n"}
	data := json.RawMessage(`{"grants": [ {"b":1, "a":2} ] }`)
	t.Run("versions count up and the newest is active", func(t *testing.T) {
		v1, err := s.PutPolicyBundle(ctx, "a", modules, data, base)
		must(t, err, "PutPolicyBundle")
		equal(t, v1, store.PolicyBundle{ZoneID: "a", Version: 1, Modules: modules, Data: data, Active: true, CreatedAt: norm(base)}, "version 1")
		modules["authz.rego"] = "mutated"
		data[0] = ' '
		v1.Modules["x"] = "y"
		got, err := s.ActivePolicyBundle(ctx, "a")
		must(t, err, "ActivePolicyBundle")
		equal(t, got, store.PolicyBundle{ZoneID: "a", Version: 1, Modules: map[string]string{"authz.rego": "package caracal.authz\n"},
			Data: json.RawMessage(`{"grants": [ {"b":1, "a":2} ] }`), Active: true, CreatedAt: norm(base)}, "active bundle, byte for byte")

		v2, err := s.PutPolicyBundle(ctx, "a", map[string]string{"v2.rego": "package caracal.authz\n"}, nil, base.Add(time.Minute))
		must(t, err, "PutPolicyBundle")
		equal(t, v2.Version, int64(2), "second version")
		got, err = s.ActivePolicyBundle(ctx, "a")
		must(t, err, "ActivePolicyBundle")
		equal(t, got, store.PolicyBundle{ZoneID: "a", Version: 2, Modules: map[string]string{"v2.rego": "package caracal.authz\n"},
			Active: true, CreatedAt: norm(base.Add(time.Minute))}, "active bundle after the second put")
	})
	t.Run("invalid data is refused and the active version stays", func(t *testing.T) {
		if _, err := s.PutPolicyBundle(ctx, "a", nil, json.RawMessage(`{"broken"`), base); err == nil {
			t.Fatal("PutPolicyBundle accepted invalid JSON data")
		}
		got, err := s.ActivePolicyBundle(ctx, "a")
		must(t, err, "ActivePolicyBundle")
		equal(t, got.Version, int64(2), "active version")
	})
	t.Run("versions are per zone and a missing zone is not found", func(t *testing.T) {
		got, err := s.PutPolicyBundle(ctx, "b", nil, json.RawMessage(`{}`), base)
		must(t, err, "PutPolicyBundle")
		if got.Version != 1 || got.Modules == nil || len(got.Modules) != 0 {
			t.Fatalf("zone b bundle = %+v, want version 1 with an empty, non-nil module map", got)
		}
		_, err = s.PutPolicyBundle(ctx, "nope", modules, nil, base)
		wantErr(t, err, store.ErrNotFound, "PutPolicyBundle")
		_, err = s.ActivePolicyBundle(ctx, "nope")
		wantErr(t, err, store.ErrNotFound, "ActivePolicyBundle")
	})
	t.Run("concurrent puts get distinct versions and the last one is active", func(t *testing.T) {
		const n = 8
		versions := make([]int64, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				b, err := s.PutPolicyBundle(ctx, "b", map[string]string{"m.rego": strconv.Itoa(i)}, nil, base)
				if err != nil {
					t.Errorf("PutPolicyBundle: %v", err)
				}
				versions[i] = b.Version
			})
		}
		wg.Wait()
		slices.Sort(versions)
		equal(t, versions, []int64{2, 3, 4, 5, 6, 7, 8, 9}, "versions")
		got, err := s.ActivePolicyBundle(ctx, "b")
		must(t, err, "ActivePolicyBundle")
		equal(t, got.Version, int64(9), "active version")
	})
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	graphZone(t, s, "a")
	graphZone(t, s, "b")
	sess := store.Session{ZoneID: "a", ID: "s1", ClientID: clientID, Status: store.StatusRevoked, CreatedAt: base,
		ExpiresAt: base.Add(time.Hour), RevokedAt: base, RevokeReason: "ignored"}
	must(t, s.CreateSession(ctx, sess), "CreateSession")

	t.Run("a new session is active", func(t *testing.T) {
		got, err := s.GetSession(ctx, "a", "s1")
		must(t, err, "GetSession")
		equal(t, got, store.Session{ZoneID: "a", ID: "s1", ClientID: clientID, Status: store.StatusActive, CreatedAt: norm(base), ExpiresAt: norm(base.Add(time.Hour))}, "session")
	})
	t.Run("an existing sid conflicts", func(t *testing.T) {
		wantErr(t, s.CreateSession(ctx, store.Session{ZoneID: "a", ID: "s1", ClientID: clientID}), store.ErrConflict, "CreateSession twice")
	})
	t.Run("a missing zone, application or session is not found", func(t *testing.T) {
		wantErr(t, s.CreateSession(ctx, store.Session{ZoneID: "a", ID: "s2", ClientID: "nobody"}), store.ErrNotFound, "unknown application")
		wantErr(t, s.CreateSession(ctx, store.Session{ZoneID: "nope", ID: "s2", ClientID: clientID}), store.ErrNotFound, "unknown zone")
		_, err := s.GetSession(ctx, "a", "s2")
		wantErr(t, err, store.ErrNotFound, "GetSession")
	})
	t.Run("a session cannot use another zone's application", func(t *testing.T) {
		must(t, s.CreateApplication(ctx, store.Application{ZoneID: "a", ClientID: "only-a", Name: "A only"}), "CreateApplication")
		wantErr(t, s.CreateSession(ctx, store.Session{ZoneID: "b", ID: "s9", ClientID: "only-a"}), store.ErrNotFound, "session in b for an application of a")
	})
	t.Run("Sessions returns the zone's sessions among the ids and nothing else", func(t *testing.T) {
		got, err := s.Sessions(ctx, "a", []string{"s1", "missing"})
		must(t, err, "Sessions")
		equal(t, len(got), 1, "sessions found")
		equal(t, got["s1"].ClientID, clientID, "session s1")
		got, err = s.Sessions(ctx, "b", []string{"s1"})
		must(t, err, "Sessions in b")
		equal(t, len(got), 0, "zone a's session seen from zone b")
		got, err = s.Sessions(ctx, "nope", []string{"s1"})
		must(t, err, "Sessions in an unknown zone")
		equal(t, len(got), 0, "sessions of an unknown zone")
	})
	t.Run("the same sid in another zone is another session", func(t *testing.T) {
		must(t, s.CreateSession(ctx, store.Session{ZoneID: "b", ID: "s1", ClientID: clientID, CreatedAt: base, ExpiresAt: base.Add(2 * time.Hour)}), "CreateSession in b")
		got, err := s.GetSession(ctx, "b", "s1")
		must(t, err, "GetSession b")
		equal(t, got.ExpiresAt, norm(base.Add(2*time.Hour)), "zone b's session expiry")
		got, err = s.GetSession(ctx, "a", "s1")
		must(t, err, "GetSession a")
		equal(t, got.ExpiresAt, norm(base.Add(time.Hour)), "zone a's session expiry")
	})
}

func testRevokeSession(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base.Add(10 * time.Minute)

	t.Run("the source's edges and all their descendants are revoked with their outbox rows", func(t *testing.T) {
		graphZone(t, s, "a", "s1", "s2", "s3", "s4")
		graphZone(t, s, "b", "s1", "s2")
		e1 := createEdge(t, s, edge("a", "e1", "s1", "s2", "", 1*time.Second))
		e2 := createEdge(t, s, edge("a", "e2", "s2", "s3", "e1", 2*time.Second))
		e3 := createEdge(t, s, edge("a", "e3", "s3", "s4", "e2", 3*time.Second))
		createEdge(t, s, edge("a", "other", "s3", "s4", "", 4*time.Second))
		createEdge(t, s, edge("b", "e1", "s1", "s2", "", 1*time.Second))
		before := len(pending(t, s, "a"))

		rev, err := s.RevokeSession(ctx, "a", "s1", "compromised", now)
		must(t, err, "RevokeSession")
		if rev.Session == nil {
			t.Fatal("Revocation.Session is nil")
		}
		equal(t, *rev.Session, store.Session{ZoneID: "a", ID: "s1", ClientID: clientID, Status: store.StatusRevoked, CreatedAt: norm(base),
			ExpiresAt: norm(base.Add(time.Hour)), RevokedAt: norm(now), RevokeReason: "compromised"}, "revoked session")
		got, err := s.GetSession(ctx, "a", "s1")
		must(t, err, "GetSession")
		equal(t, got, *rev.Session, "stored session")
		equal(t, ids(rev.Edges), []string{"e1", "e2", "e3"}, "revoked edges")
		equal(t, rev.Epoch, int64(5), "epoch after four creates and one revocation")
		for i, want := range []store.Edge{e1, e2, e3} {
			want.Status, want.RevokedAt = store.StatusRevoked, norm(now)
			equal(t, rev.Edges[i], want, "revoked edge "+want.ID)
			stored, err := s.GetEdge(ctx, "a", want.ID)
			must(t, err, "GetEdge")
			equal(t, stored, want, "stored edge "+want.ID)
		}
		for _, e := range []struct{ zone, id string }{{"a", "other"}, {"b", "e1"}} {
			stored, err := s.GetEdge(ctx, e.zone, e.id)
			must(t, err, "GetEdge")
			equal(t, stored.Status, store.StatusActive, "unrelated edge "+e.zone+"/"+e.id)
		}
		sb, err := s.GetSession(ctx, "b", "s1")
		must(t, err, "GetSession b")
		equal(t, sb.Status, store.StatusActive, "zone b's s1")

		rows := pending(t, s, "a")[before:]
		equal(t, shapes(rows), []outboxShape{
			{revocation.StreamSessionsRevoke, map[string]string{"zone_id": "a", "session_id": "s1", "reason": "compromised", "revoked_at": ms(now), "expires_at": ms(base.Add(time.Hour))}},
			edgeRevoked("a", "e1", "compromised", now, e1.ExpiresAt),
			invalidated("a", 5, "e1", "revoke"),
			edgeRevoked("a", "e2", "compromised", now, e2.ExpiresAt),
			invalidated("a", 5, "e2", "revoke"),
			edgeRevoked("a", "e3", "compromised", now, e3.ExpiresAt),
			invalidated("a", 5, "e3", "revoke"),
		}, "outbox rows")
		for _, r := range rows {
			equal(t, r.CreatedAt, norm(now), "outbox row time")
		}
		epoch, err := s.Epoch(ctx, "b")
		must(t, err, "Epoch b")
		equal(t, epoch, int64(1), "zone b's epoch")

		t.Run("revoking it again changes nothing", func(t *testing.T) {
			again, err := s.RevokeSession(ctx, "a", "s1", "again", now.Add(time.Minute))
			must(t, err, "RevokeSession")
			if again.Session == nil || again.Session.RevokeReason != "compromised" || !again.Session.RevokedAt.Equal(norm(now)) {
				t.Fatalf("second revocation returned session %+v, want the first revocation's", again.Session)
			}
			if len(again.Edges) != 0 || again.Epoch != 5 {
				t.Fatalf("second revocation = %d edges, epoch %d; want none and 5", len(again.Edges), again.Epoch)
			}
			equal(t, len(pending(t, s, "a")), len(rows)+before, "outbox rows after the second revocation")
		})
	})
	t.Run("the target's edges are revoked but not the edge that delegated to its source", func(t *testing.T) {
		graphZone(t, s, "c", "s1", "s2", "s3")
		createEdge(t, s, edge("c", "root", "s1", "s2", "", time.Second))
		createEdge(t, s, edge("c", "child", "s2", "s3", "root", 2*time.Second))
		rev, err := s.RevokeSession(ctx, "c", "s3", "logout", now)
		must(t, err, "RevokeSession")
		equal(t, ids(rev.Edges), []string{"child"}, "revoked edges")
		root, err := s.GetEdge(ctx, "c", "root")
		must(t, err, "GetEdge")
		equal(t, root.Status, store.StatusActive, "root edge")
	})
	t.Run("a session without edges leaves the epoch alone", func(t *testing.T) {
		graphZone(t, s, "d", "s1")
		rev, err := s.RevokeSession(ctx, "d", "s1", "logout", now)
		must(t, err, "RevokeSession")
		if len(rev.Edges) != 0 || rev.Epoch != 0 {
			t.Fatalf("revocation = %d edges, epoch %d; want none and 0", len(rev.Edges), rev.Epoch)
		}
		equal(t, shapes(pending(t, s, "d")), []outboxShape{{revocation.StreamSessionsRevoke, map[string]string{
			"zone_id": "d", "session_id": "s1", "reason": "logout", "revoked_at": ms(now), "expires_at": ms(base.Add(time.Hour)),
		}}}, "outbox rows")
	})
	t.Run("a missing session or zone is not found", func(t *testing.T) {
		_, err := s.RevokeSession(ctx, "d", "nope", "x", now)
		wantErr(t, err, store.ErrNotFound, "missing session")
		_, err = s.RevokeSession(ctx, "nope", "s1", "x", now)
		wantErr(t, err, store.ErrNotFound, "missing zone")
	})
}

func testCreateEdge(t *testing.T, s store.Store) {
	ctx := t.Context()
	graphZone(t, s, "a", "s1", "s2", "s3")
	graphZone(t, s, "b", "only-b")

	var root store.Edge
	t.Run("a root edge is checked, stored active and bumps the epoch", func(t *testing.T) {
		in := edge("a", "e1", "s1", "s2", "", time.Second)
		in.Status, in.RevokedAt, in.Epoch = store.StatusRevoked, base, 99
		calls := 0
		got, err := s.CreateEdge(ctx, in, func(parent *store.Edge, source, target store.Session) error {
			calls++
			if parent != nil {
				t.Errorf("check got parent %+v for a root edge", parent)
			}
			if source.ID != "s1" || target.ID != "s2" || source.Status != store.StatusActive {
				t.Errorf("check got sessions %+v and %+v", source, target)
			}
			return nil
		})
		must(t, err, "CreateEdge")
		equal(t, calls, 1, "check calls")
		want := edge("a", "e1", "s1", "s2", "", time.Second)
		want.ExpiresAt, want.CreatedAt = norm(want.ExpiresAt), norm(want.CreatedAt)
		want.Status, want.Epoch = store.StatusActive, 1
		equal(t, got, want, "created edge")
		stored, err := s.GetEdge(ctx, "a", "e1")
		must(t, err, "GetEdge")
		equal(t, stored, want, "stored edge")
		got.Scopes[0] = "mutated"
		stored, err = s.GetEdge(ctx, "a", "e1")
		must(t, err, "GetEdge")
		equal(t, stored.Scopes, []string{"read"}, "scopes after mutating the returned edge")
		equal(t, shapes(pending(t, s, "a")), []outboxShape{invalidated("a", 1, "e1", "create")}, "outbox rows")
		root = want
	})
	t.Run("a child edge's check sees its parent", func(t *testing.T) {
		var seen *store.Edge
		got, err := s.CreateEdge(ctx, edge("a", "e2", "s2", "s3", "e1", 2*time.Second), func(parent *store.Edge, _, _ store.Session) error {
			seen = parent
			return nil
		})
		must(t, err, "CreateEdge")
		if seen == nil {
			t.Fatal("check got no parent")
		}
		equal(t, *seen, root, "parent given to check")
		equal(t, got.Epoch, int64(2), "epoch")
		equal(t, got.ParentEdgeID, "e1", "parent id")
	})
	t.Run("a refusing check's error comes back unchanged and nothing is written", func(t *testing.T) {
		refused := errors.New("delegation refused")
		before := len(pending(t, s, "a"))
		_, err := s.CreateEdge(ctx, edge("a", "e3", "s1", "s3", "", 3*time.Second), func(*store.Edge, store.Session, store.Session) error {
			return refused
		})
		if err != refused {
			t.Fatalf("CreateEdge err = %v, want the check's error itself", err)
		}
		_, err = s.GetEdge(ctx, "a", "e3")
		wantErr(t, err, store.ErrNotFound, "GetEdge of the refused edge")
		epoch, err := s.Epoch(ctx, "a")
		must(t, err, "Epoch")
		equal(t, epoch, int64(2), "epoch after the refusal")
		equal(t, len(pending(t, s, "a")), before, "outbox rows after the refusal")
	})
	t.Run("missing references are not found and an existing id conflicts", func(t *testing.T) {
		cases := []struct {
			name string
			e    store.Edge
			want error
		}{
			{"missing source", edge("a", "x", "nope", "s2", "", 0), store.ErrNotFound},
			{"missing target", edge("a", "x", "s1", "nope", "", 0), store.ErrNotFound},
			{"missing parent", edge("a", "x", "s2", "s3", "nope", 0), store.ErrNotFound},
			{"missing zone", edge("nope", "x", "s1", "s2", "", 0), store.ErrNotFound},
			{"another zone's session", edge("a", "x", "s1", "only-b", "", 0), store.ErrNotFound},
			{"another zone's parent", edge("b", "x", "only-b", "only-b", "e1", 0), store.ErrNotFound},
			{"existing id", edge("a", "e1", "s1", "s3", "", 0), store.ErrConflict},
		}
		missingResource := edge("a", "x", "s1", "s2", "", 0)
		missingResource.Resource = "https://missing.example/"
		cases = append(cases, struct {
			name string
			e    store.Edge
			want error
		}{"missing resource", missingResource, store.ErrNotFound})
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := s.CreateEdge(ctx, c.e, nil)
				wantErr(t, err, c.want, "CreateEdge")
			})
		}
		epoch, err := s.Epoch(ctx, "a")
		must(t, err, "Epoch")
		equal(t, epoch, int64(2), "epoch after the failures")
	})
	t.Run("another zone cannot read the edge", func(t *testing.T) {
		_, err := s.GetEdge(ctx, "b", "e1")
		wantErr(t, err, store.ErrNotFound, "GetEdge through zone b")
	})
}

func testEdgePath(t *testing.T, s store.Store) {
	ctx := t.Context()
	graphZone(t, s, "a", "s1", "s2", "s3", "s4")
	graphZone(t, s, "b", "s1", "s2")
	createEdge(t, s, edge("a", "e1", "s1", "s2", "", time.Second))
	createEdge(t, s, edge("a", "e2", "s2", "s3", "e1", 2*time.Second))
	createEdge(t, s, edge("a", "e3", "s3", "s4", "e2", 3*time.Second))
	createEdge(t, s, edge("b", "e3", "s1", "s2", "", time.Second))

	t.Run("the path runs from the root to the edge", func(t *testing.T) {
		path, err := s.EdgePath(ctx, "a", "e3")
		must(t, err, "EdgePath")
		equal(t, ids(path), []string{"e1", "e2", "e3"}, "path")
		equal(t, path[1].ParentEdgeID, "e1", "middle edge's parent")
		path[0].Scopes[0] = "mutated"
		again, err := s.EdgePath(ctx, "a", "e3")
		must(t, err, "EdgePath")
		equal(t, again[0].Scopes, []string{"read"}, "root scopes after mutating a returned path")
	})
	t.Run("a root's path is itself", func(t *testing.T) {
		path, err := s.EdgePath(ctx, "a", "e1")
		must(t, err, "EdgePath")
		equal(t, ids(path), []string{"e1"}, "path")
	})
	t.Run("the path stays in the zone", func(t *testing.T) {
		path, err := s.EdgePath(ctx, "b", "e3")
		must(t, err, "EdgePath")
		equal(t, ids(path), []string{"e3"}, "zone b's path")
		equal(t, path[0].ZoneID, "b", "zone")
	})
	t.Run("a missing edge is not found", func(t *testing.T) {
		_, err := s.EdgePath(ctx, "a", "nope")
		wantErr(t, err, store.ErrNotFound, "EdgePath")
		_, err = s.EdgePath(ctx, "b", "e2")
		wantErr(t, err, store.ErrNotFound, "EdgePath of zone a's edge through zone b")
	})
}

func testRevokeEdge(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := base.Add(5 * time.Minute)
	graphZone(t, s, "a", "s1", "s2", "s3", "s4", "s5")
	createEdge(t, s, edge("a", "e1", "s1", "s2", "", time.Second))
	createEdge(t, s, edge("a", "e2", "s2", "s3", "e1", 2*time.Second))
	e3 := createEdge(t, s, edge("a", "e3", "s3", "s4", "e2", 3*time.Second))
	e4 := createEdge(t, s, edge("a", "e4", "s3", "s5", "e2", 4*time.Second))
	e5 := createEdge(t, s, edge("a", "e5", "s4", "s5", "e3", 5*time.Second))
	before := len(pending(t, s, "a"))

	t.Run("an edge and its descendants are revoked, its parent is not", func(t *testing.T) {
		e2, err := s.GetEdge(ctx, "a", "e2")
		must(t, err, "GetEdge")
		rev, err := s.RevokeEdge(ctx, "a", "e2", "operator", now)
		must(t, err, "RevokeEdge")
		if rev.Session != nil {
			t.Errorf("edge revocation returned session %+v", rev.Session)
		}
		equal(t, ids(rev.Edges), []string{"e2", "e3", "e4", "e5"}, "revoked edges")
		equal(t, rev.Epoch, int64(6), "epoch")
		for _, e := range rev.Edges {
			if e.Status != store.StatusRevoked || e.RevokedAt != norm(now) {
				t.Errorf("edge %s = %s at %v, want revoked at %v", e.ID, e.Status, e.RevokedAt, norm(now))
			}
		}
		parent, err := s.GetEdge(ctx, "a", "e1")
		must(t, err, "GetEdge")
		equal(t, parent.Status, store.StatusActive, "parent edge")
		equal(t, shapes(pending(t, s, "a")[before:]), []outboxShape{
			edgeRevoked("a", "e2", "operator", now, e2.ExpiresAt), invalidated("a", 6, "e2", "revoke"),
			edgeRevoked("a", "e3", "operator", now, e3.ExpiresAt), invalidated("a", 6, "e3", "revoke"),
			edgeRevoked("a", "e4", "operator", now, e4.ExpiresAt), invalidated("a", 6, "e4", "revoke"),
			edgeRevoked("a", "e5", "operator", now, e5.ExpiresAt), invalidated("a", 6, "e5", "revoke"),
		}, "outbox rows")
	})
	t.Run("revoking a revoked edge changes nothing", func(t *testing.T) {
		rows := len(pending(t, s, "a"))
		for _, id := range []string{"e2", "e5"} {
			rev, err := s.RevokeEdge(ctx, "a", id, "again", now.Add(time.Minute))
			must(t, err, "RevokeEdge")
			if len(rev.Edges) != 0 || rev.Epoch != 6 {
				t.Fatalf("second revocation of %s = %d edges, epoch %d; want none and 6", id, len(rev.Edges), rev.Epoch)
			}
		}
		e5, err := s.GetEdge(ctx, "a", "e5")
		must(t, err, "GetEdge")
		equal(t, e5.RevokedAt, norm(now), "first revocation time")
		equal(t, len(pending(t, s, "a")), rows, "outbox rows")
	})
	t.Run("a missing edge or zone is not found", func(t *testing.T) {
		_, err := s.RevokeEdge(ctx, "a", "nope", "x", now)
		wantErr(t, err, store.ErrNotFound, "missing edge")
		_, err = s.RevokeEdge(ctx, "nope", "e1", "x", now)
		wantErr(t, err, store.ErrNotFound, "missing zone")
	})
}

func testExpireEdges(t *testing.T, s store.Store) {
	ctx := t.Context()
	graphZone(t, s, "a", "s1", "s2", "s3")
	graphZone(t, s, "b", "s1", "s2")
	createEdge(t, s, edge("a", "e1", "s1", "s2", "", time.Second))     // expires base+1h+1s
	createEdge(t, s, edge("a", "e2", "s2", "s3", "e1", time.Second))   // same expiry
	createEdge(t, s, edge("a", "e3", "s1", "s3", "", time.Minute))     // expires base+1h+1m
	createEdge(t, s, edge("b", "e1", "s1", "s2", "", -time.Hour))      // long expired
	createEdge(t, s, edge("a", "gone", "s1", "s3", "", 2*time.Second)) // revoked before expiry
	_, err := s.RevokeEdge(ctx, "a", "gone", "x", base)
	must(t, err, "RevokeEdge")
	before := len(pending(t, s, "a"))

	t.Run("nothing expires before its time", func(t *testing.T) {
		edges, epoch, err := s.ExpireEdges(ctx, "a", base.Add(time.Hour))
		must(t, err, "ExpireEdges")
		if len(edges) != 0 || epoch != 5 {
			t.Fatalf("ExpireEdges = %d edges, epoch %d; want none and 5", len(edges), epoch)
		}
	})
	t.Run("active edges at or past their expiry expire", func(t *testing.T) {
		now := base.Add(time.Hour + time.Second)
		edges, epoch, err := s.ExpireEdges(ctx, "a", now)
		must(t, err, "ExpireEdges")
		equal(t, ids(edges), []string{"e1", "e2"}, "expired edges")
		equal(t, epoch, int64(6), "epoch")
		for _, e := range edges {
			equal(t, e.Status, store.StatusExpired, "status of "+e.ID)
			stored, err := s.GetEdge(ctx, "a", e.ID)
			must(t, err, "GetEdge")
			equal(t, stored, e, "stored "+e.ID)
		}
		gone, err := s.GetEdge(ctx, "a", "gone")
		must(t, err, "GetEdge")
		equal(t, gone.Status, store.StatusRevoked, "a revoked edge stays revoked")
		rows := pending(t, s, "a")[before:]
		equal(t, shapes(rows), []outboxShape{invalidated("a", 6, "e1", "expire"), invalidated("a", 6, "e2", "expire")}, "outbox rows")
		equal(t, rows[0].CreatedAt, norm(now), "outbox row time")
	})
	t.Run("expiring again changes nothing and revoking an expired edge neither", func(t *testing.T) {
		edges, epoch, err := s.ExpireEdges(ctx, "a", base.Add(time.Hour+time.Second))
		must(t, err, "ExpireEdges")
		if len(edges) != 0 || epoch != 6 {
			t.Fatalf("ExpireEdges = %d edges, epoch %d; want none and 6", len(edges), epoch)
		}
		rev, err := s.RevokeEdge(ctx, "a", "e1", "x", base.Add(2*time.Hour))
		must(t, err, "RevokeEdge")
		if len(rev.Edges) != 0 || rev.Epoch != 6 {
			t.Fatalf("RevokeEdge of an expired edge = %d edges, epoch %d; want none and 6", len(rev.Edges), rev.Epoch)
		}
	})
	t.Run("another zone's edges are untouched", func(t *testing.T) {
		e, err := s.GetEdge(ctx, "b", "e1")
		must(t, err, "GetEdge")
		equal(t, e.Status, store.StatusActive, "zone b's edge")
		_, _, err = s.ExpireEdges(ctx, "nope", base)
		wantErr(t, err, store.ErrNotFound, "ExpireEdges of a missing zone")
	})
}

func testConcurrentEpoch(t *testing.T, s store.Store) {
	ctx := t.Context()
	graphZone(t, s, "a", "s1", "s2")
	graphZone(t, s, "b", "s1", "s2")
	const workers, rounds = 6, 5
	var mu sync.Mutex
	var epochs []int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				e, err := s.CreateEdge(ctx, edge("a", fmt.Sprintf("e-%d-%d", w, r), "s1", "s2", "", time.Duration(w*rounds+r)*time.Millisecond), nil)
				if err != nil {
					t.Errorf("CreateEdge: %v", err)
					return
				}
				rev, err := s.RevokeEdge(ctx, "a", e.ID, "test", base)
				if err != nil {
					t.Errorf("RevokeEdge: %v", err)
					return
				}
				if _, err := s.CreateEdge(ctx, edge("b", e.ID, "s1", "s2", "", 0), nil); err != nil {
					t.Errorf("CreateEdge in b: %v", err)
					return
				}
				mu.Lock()
				epochs = append(epochs, e.Epoch, rev.Epoch)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.Sort(epochs)
	want := make([]int64, 2*workers*rounds)
	for i := range want {
		want[i] = int64(i + 1)
	}
	equal(t, epochs, want, "epochs returned by the creations and revocations")
	epoch, err := s.Epoch(ctx, "a")
	must(t, err, "Epoch")
	equal(t, epoch, int64(2*workers*rounds), "final epoch of zone a")
	epoch, err = s.Epoch(ctx, "b")
	must(t, err, "Epoch")
	equal(t, epoch, int64(workers*rounds), "final epoch of zone b, changed alongside")
	var last int64
	for _, row := range pending(t, s, "a") {
		if row.Stream != revocation.StreamDelegationInvalidate {
			continue
		}
		epoch, err := strconv.ParseInt(row.Fields["epoch"], 10, 64)
		must(t, err, "parsing outbox epoch")
		if epoch <= last {
			t.Fatalf("outbox epochs are not strictly increasing in id order: %d after %d", epoch, last)
		}
		last = epoch
	}
}

func testOutbox(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	createZone(t, s, "b")
	fields := map[string]string{"zone_id": "a", "version": "3"}
	first, err := s.AppendOutbox(ctx, store.OutboxEvent{ZoneID: "a", ID: 777, Stream: revocation.StreamPolicyInvalidate, Fields: fields, CreatedAt: base, Attempts: 5})
	must(t, err, "AppendOutbox")
	fields["version"] = "mutated"
	second, err := s.AppendOutbox(ctx, store.OutboxEvent{ZoneID: "b", Stream: revocation.StreamPolicyInvalidate, Fields: map[string]string{"zone_id": "b"}, CreatedAt: base})
	must(t, err, "AppendOutbox")
	third, err := s.AppendOutbox(ctx, store.OutboxEvent{ZoneID: "a", Stream: revocation.StreamPolicyInvalidate, CreatedAt: base})
	must(t, err, "AppendOutbox")

	t.Run("appended entries get increasing ids and read back unpublished", func(t *testing.T) {
		if first.ID <= 0 || second.ID <= first.ID || third.ID <= second.ID {
			t.Fatalf("ids %d, %d, %d are not positive and increasing", first.ID, second.ID, third.ID)
		}
		equal(t, first, store.OutboxEvent{ZoneID: "a", ID: first.ID, Stream: revocation.StreamPolicyInvalidate,
			Fields: map[string]string{"zone_id": "a", "version": "3"}, CreatedAt: norm(base)}, "first entry")
		if third.Fields == nil || len(third.Fields) != 0 {
			t.Fatalf("entry without fields has fields %#v, want an empty, non-nil map", third.Fields)
		}
	})
	t.Run("pending entries of every zone come oldest first, up to the limit", func(t *testing.T) {
		all, err := s.PendingOutbox(ctx, 10)
		must(t, err, "PendingOutbox")
		equal(t, all, []store.OutboxEvent{first, second, third}, "pending entries")
		all[0].Fields["zone_id"] = "mutated"
		two, err := s.PendingOutbox(ctx, 2)
		must(t, err, "PendingOutbox")
		equal(t, two, []store.OutboxEvent{first, second}, "limited pending entries, unaffected by mutation")
		for _, limit := range []int{0, -1} {
			if _, err := s.PendingOutbox(ctx, limit); err == nil {
				t.Errorf("PendingOutbox(%d) accepted a non-positive limit", limit)
			}
		}
	})
	t.Run("a failed attempt is counted and the entry stays pending", func(t *testing.T) {
		must(t, s.MarkAttempt(ctx, "a", first.ID), "MarkAttempt")
		must(t, s.MarkAttempt(ctx, "a", first.ID), "MarkAttempt")
		all, err := s.PendingOutbox(ctx, 10)
		must(t, err, "PendingOutbox")
		equal(t, all[0].Attempts, 2, "attempts")
	})
	t.Run("a published entry is no longer pending", func(t *testing.T) {
		must(t, s.MarkPublished(ctx, "a", first.ID, base), "MarkPublished")
		must(t, s.MarkPublished(ctx, "a", first.ID, base.Add(time.Minute)), "MarkPublished twice")
		all, err := s.PendingOutbox(ctx, 10)
		must(t, err, "PendingOutbox")
		equal(t, all, []store.OutboxEvent{second, third}, "pending entries")
	})
	t.Run("entries are addressed within their zone", func(t *testing.T) {
		wantErr(t, s.MarkPublished(ctx, "b", third.ID, base), store.ErrNotFound, "MarkPublished through another zone")
		wantErr(t, s.MarkAttempt(ctx, "b", third.ID), store.ErrNotFound, "MarkAttempt through another zone")
		wantErr(t, s.MarkPublished(ctx, "a", 1<<40, base), store.ErrNotFound, "MarkPublished of a missing id")
		_, err := s.AppendOutbox(ctx, store.OutboxEvent{ZoneID: "nope", Stream: revocation.StreamPolicyInvalidate})
		wantErr(t, err, store.ErrNotFound, "AppendOutbox to a missing zone")
		all, err := s.PendingOutbox(ctx, 10)
		must(t, err, "PendingOutbox")
		equal(t, len(all), 2, "pending entries after the refusals")
	})
}

func testAdminTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	hash := []byte("0123456789abcdef0123456789abcdef")
	global := store.AdminToken{ID: "t1", Capability: "write", Hash: hash, CreatedAt: base, RevokedAt: base}
	must(t, s.CreateAdminToken(ctx, global), "CreateAdminToken")
	hash[0] = 'X'
	zoned := store.AdminToken{ID: "t2", ZoneID: "a", Capability: "read", Hash: []byte("zoned"), CreatedAt: base}
	must(t, s.CreateAdminToken(ctx, zoned), "CreateAdminToken")

	t.Run("tokens are found by hash", func(t *testing.T) {
		got, err := s.AdminTokenByHash(ctx, []byte("0123456789abcdef0123456789abcdef"))
		must(t, err, "AdminTokenByHash")
		equal(t, got, store.AdminToken{ID: "t1", Capability: "write", Hash: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: norm(base)}, "global token")
		got.Hash[0] = 'X'
		got, err = s.AdminTokenByHash(ctx, []byte("zoned"))
		must(t, err, "AdminTokenByHash")
		equal(t, got, store.AdminToken{ID: "t2", ZoneID: "a", Capability: "read", Hash: []byte("zoned"), CreatedAt: norm(base)}, "zone token")
		_, err = s.AdminTokenByHash(ctx, []byte("0123456789abcdef0123456789abcdef"))
		must(t, err, "AdminTokenByHash after mutating a returned hash")
		_, err = s.AdminTokenByHash(ctx, []byte("unknown"))
		wantErr(t, err, store.ErrNotFound, "unknown hash")
	})
	t.Run("an existing id or hash conflicts and a missing zone is not found", func(t *testing.T) {
		wantErr(t, s.CreateAdminToken(ctx, store.AdminToken{ID: "t1", Capability: "read", Hash: []byte("other")}), store.ErrConflict, "same id")
		wantErr(t, s.CreateAdminToken(ctx, store.AdminToken{ID: "t3", Capability: "read", Hash: []byte("zoned")}), store.ErrConflict, "same hash")
		wantErr(t, s.CreateAdminToken(ctx, store.AdminToken{ID: "t4", ZoneID: "nope", Capability: "read", Hash: []byte("t4")}), store.ErrNotFound, "missing zone")
	})
	t.Run("a revoked token keeps its first revocation time", func(t *testing.T) {
		now := base.Add(time.Hour)
		must(t, s.RevokeAdminToken(ctx, "t2", now), "RevokeAdminToken")
		must(t, s.RevokeAdminToken(ctx, "t2", now.Add(time.Hour)), "RevokeAdminToken twice")
		got, err := s.AdminTokenByHash(ctx, []byte("zoned"))
		must(t, err, "AdminTokenByHash")
		equal(t, got.RevokedAt, norm(now), "revocation time")
		wantErr(t, s.RevokeAdminToken(ctx, "nope", now), store.ErrNotFound, "RevokeAdminToken of a missing token")
	})
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	createZone(t, s, "a")
	detail := json.RawMessage(`{"z": 1,  "a": [true]}`)
	events := []store.AuditEvent{
		{ZoneID: "a", ID: 99, At: base, Actor: "admin:t1", Action: "zone.create", Subject: "a", Detail: detail},
		{ZoneID: "", At: base, Actor: "admin:t1", Action: "admin_token.create", Subject: "t2"},
		{ZoneID: "a", At: base.Add(time.Second), Actor: "admin:t2", Action: "session.revoke", Subject: "s1"},
		{ZoneID: "unknown", At: base, Actor: "admin:t2", Action: "zone.forbidden", Subject: "unknown"},
	}
	for _, e := range events {
		must(t, s.AppendAudit(ctx, e), "AppendAudit")
	}
	detail[0] = ' '

	t.Run("a zone's events come newest first", func(t *testing.T) {
		got, err := s.ListAudit(ctx, "a", 10)
		must(t, err, "ListAudit")
		if len(got) != 2 || got[0].ID <= got[1].ID {
			t.Fatalf("zone a events = %+v, want two, newest first", got)
		}
		equal(t, got[1], store.AuditEvent{ZoneID: "a", ID: got[1].ID, At: norm(base), Actor: "admin:t1", Action: "zone.create", Subject: "a",
			Detail: json.RawMessage(`{"z": 1,  "a": [true]}`)}, "oldest event, detail byte for byte")
		equal(t, got[0], store.AuditEvent{ZoneID: "a", ID: got[0].ID, At: norm(base.Add(time.Second)), Actor: "admin:t2", Action: "session.revoke", Subject: "s1"}, "newest event")
		got[1].Detail[0] = 'X'
		one, err := s.ListAudit(ctx, "a", 1)
		must(t, err, "ListAudit")
		equal(t, ids2(one), []int64{got[0].ID}, "limited list")
	})
	t.Run("global and unknown-zone events are kept apart", func(t *testing.T) {
		for zone, action := range map[string]string{"": "admin_token.create", "unknown": "zone.forbidden"} {
			got, err := s.ListAudit(ctx, zone, 10)
			must(t, err, "ListAudit")
			if len(got) != 1 || got[0].Action != action {
				t.Fatalf("events of zone %q = %+v, want only %s", zone, got, action)
			}
		}
	})
	t.Run("invalid detail and non-positive limits are refused", func(t *testing.T) {
		if err := s.AppendAudit(ctx, store.AuditEvent{ZoneID: "a", Action: "x", Detail: json.RawMessage(`{`)}); err == nil {
			t.Error("AppendAudit accepted invalid JSON detail")
		}
		if _, err := s.ListAudit(ctx, "a", 0); err == nil {
			t.Error("ListAudit accepted limit 0")
		}
		got, err := s.ListAudit(ctx, "a", 10)
		must(t, err, "ListAudit")
		equal(t, len(got), 2, "zone a events after the refusal")
	})
	t.Run("a zero time becomes the current time", func(t *testing.T) {
		must(t, s.AppendAudit(ctx, store.AuditEvent{ZoneID: "now", Action: "x"}), "AppendAudit")
		got, err := s.ListAudit(ctx, "now", 1)
		must(t, err, "ListAudit")
		if len(got) != 1 || got[0].At.IsZero() || got[0].At != norm(got[0].At) {
			t.Fatalf("event = %+v, want a non-zero UTC time in microseconds", got)
		}
	})
}

func ids2(events []store.AuditEvent) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func testClose(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.ListZones(ctx)
	must(t, err, "ListZones")
	must(t, s.Close(), "Close")
	_, err = s.ListZones(ctx)
	wantErr(t, err, store.ErrUnavailable, "ListZones after Close")
	_, err = s.GetZone(ctx, "a")
	wantErr(t, err, store.ErrUnavailable, "GetZone after Close")
}

// testConcurrentSessions creates sessions from several goroutines at once, some of them
// racing for the same sid, while others revoke, read and purge the zone's sessions:
// every sid is taken exactly once, every created session reads back, every revocation
// is seen by LiveRevocations, and a purge removes only what has expired.
func testConcurrentSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	graphZone(t, s, "a", "old")
	const workers, perWorker = 4, 12
	var created, conflicts atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				// Workers 2k and 2k+1 race for the same sids.
				sid := fmt.Sprintf("w%d-%d", w/2, i)
				err := s.CreateSession(ctx, store.Session{ZoneID: "a", ID: sid, ClientID: clientID, CreatedAt: base, ExpiresAt: base.Add(time.Hour)})
				switch {
				case err == nil:
					created.Add(1)
				case errors.Is(err, store.ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("CreateSession %s: %v", sid, err)
				}
			}
		})
	}
	wg.Go(func() {
		for i := range perWorker {
			sid := fmt.Sprintf("w0-%d", i)
			if _, err := s.RevokeSession(ctx, "a", sid, "test", base.Add(time.Minute)); err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("RevokeSession %s: %v", sid, err)
			}
			if _, err := s.LiveRevocations(ctx, "a", base.Add(time.Minute), 0, store.RevocationCursor{}, 1000); err != nil {
				t.Errorf("LiveRevocations: %v", err)
			}
			// Nothing created by the workers has expired at this cutoff.
			if _, err := s.PurgeExpired(ctx, "a", base.Add(time.Minute), 1000); err != nil {
				t.Errorf("PurgeExpired: %v", err)
			}
		}
	})
	wg.Wait()
	if created.Load() != workers/2*perWorker || conflicts.Load() != workers/2*perWorker {
		t.Fatalf("%d created and %d conflicts, want %d of each", created.Load(), conflicts.Load(), workers/2*perWorker)
	}
	ids := []string{"old"}
	for w := range workers / 2 {
		for i := range perWorker {
			ids = append(ids, fmt.Sprintf("w%d-%d", w, i))
		}
	}
	got, err := s.Sessions(ctx, "a", ids)
	must(t, err, "Sessions")
	if len(got) != len(ids) {
		t.Fatalf("%d of %d sessions read back", len(got), len(ids))
	}
	var revoked []string
	for _, sess := range got {
		if sess.Status == store.StatusRevoked {
			revoked = append(revoked, sess.ID)
		}
	}
	live, err := s.LiveRevocations(ctx, "a", base.Add(time.Minute), 0, store.RevocationCursor{}, 1000)
	must(t, err, "LiveRevocations")
	var listed []string
	for _, r := range live {
		listed = append(listed, r.SessionID)
	}
	slices.Sort(revoked)
	equal(t, listed, revoked, "live revocations against the revoked sessions")

	// Past every expiry, a purge takes all of them, and nothing is left.
	n, err := s.PurgeExpired(ctx, "a", base.Add(2*time.Hour), 1000)
	must(t, err, "PurgeExpired")
	if n != len(ids) {
		t.Fatalf("purged %d sessions, want %d", n, len(ids))
	}
	got, err = s.Sessions(ctx, "a", ids)
	must(t, err, "Sessions after the purge")
	if len(got) != 0 {
		t.Fatalf("%d sessions left after the purge", len(got))
	}
}
