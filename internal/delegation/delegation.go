// Package delegation owns the delegation rules of docs/protocol.md section 4: what an
// edge must satisfy when the Coordinator creates it, and what the whole path from a leaf
// edge to its root must satisfy each time the STS exchanges under it. It is pure: the
// callers read the graph and the sessions, this package decides, and each caller turns a
// Violation into its own answer.
package delegation

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/caracalgw/caracal/internal/store"
)

// Limits of docs/protocol.md section 4.
const (
	// DefaultMaxHops is an edge's max_hops when the request names none.
	DefaultMaxHops = 1
	// MaxMaxHops is the largest max_hops an edge may have.
	MaxMaxHops = 10
	// MaxTTL caps a requested lifetime before the clamps to the sessions' and the
	// parent's expiry, so that now+ttl cannot overflow.
	MaxTTL = 366 * 24 * time.Hour
)

// Violation is a broken delegation rule. Message names the rule.
type Violation struct {
	// Caller reports that the creating session itself can no longer act (it ended, or
	// belongs to another client than its mandate says), as opposed to a bad request.
	Caller  bool
	Message string
}

func (v *Violation) Error() string { return v.Message }

func broken(format string, args ...any) *Violation {
	return &Violation{Message: fmt.Sprintf(format, args...)}
}

// SessionProblem says why a session cannot act, or returns "" when it is active and
// unexpired.
func SessionProblem(sess store.Session, now time.Time) string {
	switch {
	case sess.Status != store.StatusActive:
		return "session is " + sess.Status
	case !now.Before(sess.ExpiresAt):
		return "session has expired"
	}
	return ""
}

// Expiry is the expiry of a new edge: now (whole seconds, like the sessions and mandates
// it is compared with) plus the requested lifetime capped at MaxTTL, and never after any
// of limits (the source and target sessions' and the parent edge's expiry).
func Expiry(now time.Time, ttlSeconds int64, limits ...time.Time) time.Time {
	ttl := MaxTTL
	if ttlSeconds < int64(MaxTTL/time.Second) {
		ttl = time.Duration(ttlSeconds) * time.Second
	}
	exp := now.Truncate(time.Second).Add(ttl)
	for _, l := range limits {
		if l.Before(exp) {
			exp = l
		}
	}
	return exp
}

// Subset reports whether every element of a is in b.
func Subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// CheckCreation applies the creation rules to e. path runs from the root edge to e's
// parent (empty for a root edge); clientID is the client the creating mandate names.
// The scopes' and resource's existence are checked by the caller against the zone's
// resources.
func CheckCreation(e store.Edge, path []store.Edge, source, target store.Session, clientID string, now time.Time) *Violation {
	if why := SessionProblem(source, now); why != "" {
		return &Violation{Caller: true, Message: "the mandate's " + why}
	}
	if source.ClientID != clientID {
		return &Violation{Caller: true, Message: "the mandate's session belongs to another client"}
	}
	if e.TargetSessionID == e.SourceSessionID {
		return broken("target_session_id must differ from the source session")
	}
	if why := SessionProblem(target, now); why != "" {
		return broken("target %s", why)
	}
	if e.ExpiresAt.After(source.ExpiresAt) || e.ExpiresAt.After(target.ExpiresAt) {
		return broken("the edge must not outlive the source or target session")
	}
	if len(path) == 0 {
		return nil
	}
	parent := path[len(path)-1]
	switch {
	case parent.Status != store.StatusActive:
		return broken("parent edge is %s", parent.Status)
	case !now.Before(parent.ExpiresAt):
		return broken("parent edge has expired")
	case parent.TargetSessionID != e.SourceSessionID:
		return broken("the parent edge's target must be this edge's source session")
	case parent.Resource != e.Resource:
		return broken("resource must be the parent edge's resource")
	case e.ExpiresAt.After(parent.ExpiresAt):
		return broken("the edge must not outlive its parent edge")
	case parent.MaxHops <= 1:
		return broken("the parent edge's hop budget is exhausted (its max_hops is 1)")
	case e.MaxHops >= parent.MaxHops:
		return broken("max_hops must be less than the parent edge's (%d)", parent.MaxHops)
	}
	for _, sc := range e.Scopes {
		if !slices.Contains(parent.Scopes, sc) {
			return broken("scope %q is not granted by the parent edge", sc)
		}
	}
	for i, p := range path {
		if (i == 0 && p.ParentEdgeID != "") ||
			(i > 0 && (p.ParentEdgeID != path[i-1].ID || p.SourceSessionID != path[i-1].TargetSessionID)) {
			return broken("the parent edge's delegation path is broken")
		}
		if p.Status != store.StatusActive || !now.Before(p.ExpiresAt) {
			return broken("an edge on the parent's delegation path is no longer active")
		}
		if p.SourceSessionID == e.TargetSessionID || p.TargetSessionID == e.TargetSessionID {
			return broken("the delegation would form a cycle: the target session is already on the parent's delegation path")
		}
	}
	return nil
}

// PathSessions returns the ids of the sessions a path names, which CheckPath needs:
// every edge's source and the leaf's target.
func PathSessions(path []store.Edge) []string {
	ids := make([]string, 0, len(path)+1)
	for _, e := range path {
		ids = append(ids, e.SourceSessionID)
	}
	return append(ids, path[len(path)-1].TargetSessionID)
}

// CheckPath applies the exchange-time rules to a path read from the live graph (root
// first, at least one edge) and the sessions it names (by id): the leaf is granted to
// the presenting session, every edge is active, unexpired, for resource and continues
// its parent, scopes narrow monotonically, every edge's max_hops covers the hops from it
// to the leaf, and every session on the path is active. It returns the earliest expiry
// along the path, the presenting session's included, which bounds the mandate.
func CheckPath(path []store.Edge, sessions map[string]store.Session, subject store.Session, resource string, now time.Time) (time.Time, *Violation) {
	hops := len(path)
	if path[hops-1].TargetSessionID != subject.ID {
		return time.Time{}, broken("the edge was not granted to the presenting session")
	}
	expires := subject.ExpiresAt
	for i, e := range path {
		at := "edge " + strconv.Itoa(i+1) + " of " + strconv.Itoa(hops)
		switch {
		case e.Status != store.StatusActive:
			return time.Time{}, broken("%s is %s", at, e.Status)
		case !now.Before(e.ExpiresAt):
			return time.Time{}, broken("%s has expired", at)
		case e.Resource != resource:
			return time.Time{}, broken("%s is for another resource", at)
		case i == 0 && e.ParentEdgeID != "":
			return time.Time{}, broken("the path does not reach a root edge")
		case i > 0 && (e.ParentEdgeID != path[i-1].ID || e.SourceSessionID != path[i-1].TargetSessionID):
			return time.Time{}, broken("%s does not continue its parent", at)
		case i > 0 && !Subset(e.Scopes, path[i-1].Scopes):
			return time.Time{}, broken("%s widens its parent's scopes", at)
		case hops-i > e.MaxHops:
			// An edge's max_hops bounds the hops from it to the leaf: at the root this is
			// the path length itself.
			return time.Time{}, broken("%s allows %d hop(s) below it, the path needs %d", at, e.MaxHops, hops-i)
		}
		for _, sid := range [2]string{e.SourceSessionID, e.TargetSessionID} {
			sess, ok := sessions[sid]
			switch {
			case !ok:
				return time.Time{}, broken("a session on the path does not exist")
			case sess.Status != store.StatusActive:
				return time.Time{}, broken("a session on the path is %s", sess.Status)
			case !now.Before(sess.ExpiresAt):
				return time.Time{}, broken("a session on the path has expired")
			}
			if sess.ExpiresAt.Before(expires) {
				expires = sess.ExpiresAt
			}
		}
		if e.ExpiresAt.Before(expires) {
			expires = e.ExpiresAt
		}
	}
	return expires, nil
}
