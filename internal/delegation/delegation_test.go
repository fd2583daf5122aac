package delegation

import (
	"strings"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

const res = "https://api.test"

func sess(id, client string) store.Session {
	return store.Session{ID: id, ClientID: client, Status: store.StatusActive, ExpiresAt: now.Add(time.Hour)}
}

func edge(id, parent, source, target string, hops int, scopes ...string) store.Edge {
	return store.Edge{ID: id, ParentEdgeID: parent, SourceSessionID: source, TargetSessionID: target, Resource: res,
		Scopes: scopes, MaxHops: hops, Status: store.StatusActive, ExpiresAt: now.Add(30 * time.Minute)}
}

func sessions(ids ...string) map[string]store.Session {
	m := make(map[string]store.Session)
	for _, id := range ids {
		m[id] = sess(id, "c-"+id)
	}
	return m
}

func TestCheckPath(t *testing.T) {
	good := func() []store.Edge {
		return []store.Edge{edge("e1", "", "s1", "s2", 2, "read", "write"), edge("e2", "e1", "s2", "s3", 1, "read")}
	}
	all := sessions("s1", "s2", "s3")
	exp, v := CheckPath(good(), all, all["s3"], res, now)
	if v != nil || !exp.Equal(now.Add(30*time.Minute)) {
		t.Fatalf("a valid path: %v, expiry %s", v, exp)
	}
	cases := map[string]struct {
		mutate func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string)
		want   string
	}{
		"the leaf granted to another session": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			return p, s["s2"], res
		}, "not granted to the presenting session"},
		"a revoked edge": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			p[0].Status = store.StatusRevoked
			return p, s["s3"], res
		}, "edge 1 of 2 is revoked"},
		"an expired edge": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			p[1].ExpiresAt = now
			return p, s["s3"], res
		}, "edge 2 of 2 has expired"},
		"another resource": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			return p, s["s3"], "https://other.test"
		}, "is for another resource"},
		"a root that has a parent": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			p[0].ParentEdgeID = "e0"
			return p, s["s3"], res
		}, "does not reach a root edge"},
		"a broken chain": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			p[1].SourceSessionID = "s1"
			return p, s["s3"], res
		}, "does not continue its parent"},
		"widened scopes": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			p[1].Scopes = []string{"admin"}
			return p, s["s3"], res
		}, "widens its parent's scopes"},
		"a hop budget too small": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			p[0].MaxHops = 1
			return p, s["s3"], res
		}, "allows 1 hop(s) below it, the path needs 2"},
		"a revoked session on the path": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			r := s["s1"]
			r.Status = store.StatusRevoked
			s["s1"] = r
			return p, s["s3"], res
		}, "a session on the path is revoked"},
		"a missing session": {func(p []store.Edge, s map[string]store.Session) ([]store.Edge, store.Session, string) {
			delete(s, "s2")
			return p, s["s3"], res
		}, "does not exist"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := sessions("s1", "s2", "s3")
			p, subject, resource := tc.mutate(good(), s)
			_, v := CheckPath(p, s, subject, resource, now)
			if v == nil || !strings.Contains(v.Message, tc.want) || v.Caller {
				t.Fatalf("violation %+v, want %q", v, tc.want)
			}
		})
	}
	t.Run("the expiry is the earliest along the path", func(t *testing.T) {
		s := sessions("s1", "s2", "s3")
		early := s["s1"]
		early.ExpiresAt = now.Add(10 * time.Minute)
		s["s1"] = early
		exp, v := CheckPath(good(), s, s["s3"], res, now)
		if v != nil || !exp.Equal(early.ExpiresAt) {
			t.Fatalf("%v, expiry %s, want %s", v, exp, early.ExpiresAt)
		}
	})
	if got := PathSessions(good()); strings.Join(got, ",") != "s1,s2,s3" {
		t.Fatalf("PathSessions = %v", got)
	}
}

func TestCheckCreation(t *testing.T) {
	parent := edge("e1", "", "s1", "s2", 2, "read", "write")
	child := func() store.Edge { return edge("e2", "e1", "s2", "s3", 1, "read") }
	all := sessions("s1", "s2", "s3")
	if v := CheckCreation(child(), []store.Edge{parent}, all["s2"], all["s3"], "c-s2", now); v != nil {
		t.Fatalf("a valid child edge: %v", v)
	}
	if v := CheckCreation(edge("e1", "", "s1", "s2", 1), nil, all["s1"], all["s2"], "c-s1", now); v != nil {
		t.Fatalf("a valid root edge: %v", v)
	}
	t.Run("a source session that cannot act is the caller's problem", func(t *testing.T) {
		dead := all["s2"]
		dead.Status = store.StatusRevoked
		if v := CheckCreation(child(), []store.Edge{parent}, dead, all["s3"], "c-s2", now); v == nil || !v.Caller {
			t.Fatalf("%+v", v)
		}
		if v := CheckCreation(child(), []store.Edge{parent}, all["s2"], all["s3"], "someone-else", now); v == nil || !v.Caller {
			t.Fatalf("%+v", v)
		}
	})
	cases := map[string]struct {
		mutate func(e *store.Edge, path []store.Edge)
		want   string
	}{
		"target equal to source":  {func(e *store.Edge, _ []store.Edge) { e.TargetSessionID = "s2" }, "must differ"},
		"outliving a session":     {func(e *store.Edge, _ []store.Edge) { e.ExpiresAt = now.Add(2 * time.Hour) }, "must not outlive the source or target session"},
		"a revoked parent":        {func(_ *store.Edge, p []store.Edge) { p[0].Status = store.StatusRevoked }, "parent edge is revoked"},
		"an expired parent":       {func(_ *store.Edge, p []store.Edge) { p[0].ExpiresAt = now }, "parent edge has expired"},
		"not the parent's target": {func(e *store.Edge, _ []store.Edge) { e.SourceSessionID = "s1" }, "parent edge's target"},
		"another resource":        {func(e *store.Edge, _ []store.Edge) { e.Resource = "https://other.test" }, "resource must be the parent edge's"},
		"outliving the parent": {func(e *store.Edge, p []store.Edge) {
			p[0].ExpiresAt = now.Add(10 * time.Minute)
		}, "must not outlive its parent edge"},
		"an exhausted hop budget":         {func(_ *store.Edge, p []store.Edge) { p[0].MaxHops = 1 }, "hop budget is exhausted"},
		"max_hops not below the parent's": {func(e *store.Edge, _ []store.Edge) { e.MaxHops = 2 }, "max_hops must be less than"},
		"a scope the parent lacks":        {func(e *store.Edge, _ []store.Edge) { e.Scopes = []string{"admin"} }, `scope "admin" is not granted`},
		"a cycle":                         {func(e *store.Edge, _ []store.Edge) { e.TargetSessionID = "s1" }, "would form a cycle"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			e, path := child(), []store.Edge{parent}
			tc.mutate(&e, path)
			s := sessions("s1", "s2", "s3")
			v := CheckCreation(e, path, s[e.SourceSessionID], s[e.TargetSessionID], "c-"+e.SourceSessionID, now)
			if v == nil || v.Caller || !strings.Contains(v.Message, tc.want) {
				t.Fatalf("violation %+v, want %q", v, tc.want)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	at := now.Add(300 * time.Millisecond)
	if got := Expiry(at, 60); !got.Equal(now.Add(time.Minute)) {
		t.Fatalf("Expiry = %s, want whole seconds from now", got)
	}
	if got := Expiry(at, 1<<62); !got.Equal(now.Add(MaxTTL)) {
		t.Fatalf("a huge ttl = %s, want capped at MaxTTL", got)
	}
	limit := now.Add(10 * time.Second)
	if got := Expiry(at, 60, now.Add(time.Hour), limit); !got.Equal(limit) {
		t.Fatalf("Expiry = %s, want the earliest limit", got)
	}
}
