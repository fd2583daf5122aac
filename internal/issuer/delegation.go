package issuer

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// delegation is a delegation path validated at exchange time (docs/protocol.md section 4).
type delegation struct {
	path     []store.Edge // root first
	sessions map[string]store.Session
	epoch    int64
	expires  time.Time // the earliest expiry along the path
}

func (d *delegation) leaf() store.Edge { return d.path[len(d.path)-1] }
func (d *delegation) root() store.Edge { return d.path[0] }

// rootSession is the source session of the root edge: revoking it kills every mandate
// issued below it.
func (d *delegation) rootSession() store.Session { return d.sessions[d.root().SourceSessionID] }

func (d *delegation) ids() []string {
	ids := make([]string, len(d.path))
	for i, e := range d.path {
		ids[i] = e.ID
	}
	return ids
}

// actor is the RFC 8693 act claim: the presenting client outermost, then each earlier
// delegate back to (not including) the root client, who is the subject.
func (d *delegation) actor() *mandate.Actor {
	var act *mandate.Actor
	for _, e := range d.path {
		act = &mandate.Actor{Sub: d.sessions[e.TargetSessionID].ClientID, Act: act}
	}
	return act
}

func (d *delegation) policyInput() *policy.Delegation {
	leaf := d.leaf()
	return &policy.Delegation{
		EdgeID:       leaf.ID,
		Path:         d.ids(),
		HopCount:     len(d.path),
		Scopes:       slices.Clone(leaf.Scopes),
		ExpiresAt:    leaf.ExpiresAt.Unix(),
		Epoch:        d.epoch,
		RootClientID: d.rootSession().ClientID,
	}
}

func denyDelegation(description string) *oauthError {
	return newError(http.StatusForbidden, codeAccessDenied, "delegation invalid: "+description)
}

// resolveDelegation re-validates, against the live graph, the whole path from the leaf
// edge to the root: every rule of docs/protocol.md section 4 at exchange time. subject is the
// presenting session, which must be the leaf's target.
func (s *Service) resolveDelegation(ctx context.Context, zoneID, edgeID string, subject store.Session, resource string, now time.Time) (*delegation, *oauthError) {
	path, cached, err := s.edgePath(ctx, zoneID, edgeID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, denyDelegation("unknown delegation edge")
	case err != nil:
		s.log.Warn("delegation path lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("delegation state could not be read")
	}
	ids := make([]string, 0, len(path)+1)
	for _, e := range path {
		ids = append(ids, e.SourceSessionID)
	}
	ids = append(ids, path[len(path)-1].TargetSessionID)
	sessions, err := s.pathSessions(ctx, zoneID, ids)
	if err != nil {
		s.log.Warn("delegation session lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("delegation state could not be read")
	}
	d := &delegation{path: path, sessions: sessions}
	if oerr := checkPath(d, subject, resource, now); oerr != nil {
		return nil, oerr
	}
	if d.epoch, err = s.pathEpoch(ctx, zoneID, path, cached); err != nil {
		s.log.Warn("epoch lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("delegation state could not be read")
	}
	return d, nil
}

// pathEpoch is the delegation graph epoch the path was validated against. A path read
// from storage gets the zone's current epoch from storage. A path read from the cache
// reflects the graph as this process has seen it through the invalidation stream, so it
// gets the newest epoch seen there (never below the epoch of an edge on the path): a
// gateway that rejects stale epochs then refuses the mandate until this process has caught
// up, which is the safe way to be wrong.
func (s *Service) pathEpoch(ctx context.Context, zoneID string, path []store.Edge, cached bool) (int64, error) {
	if cached && s.opts.Epochs != nil {
		if seen, ok := s.opts.Epochs.Current(zoneID); ok {
			for _, e := range path {
				seen = max(seen, e.Epoch)
			}
			return seen, nil
		}
	}
	return s.store.Epoch(ctx, zoneID)
}

// checkPath applies the exchange-time rules to a fetched path.
func checkPath(d *delegation, subject store.Session, resource string, now time.Time) *oauthError {
	path := d.path
	hops := len(path)
	if path[hops-1].TargetSessionID != subject.ID {
		return denyDelegation("the edge was not granted to the presenting session")
	}
	d.expires = subject.ExpiresAt
	for i, e := range path {
		at := "edge " + strconv.Itoa(i+1) + " of " + strconv.Itoa(hops)
		switch {
		case e.Status != store.StatusActive:
			return denyDelegation(at + " is " + e.Status)
		case !now.Before(e.ExpiresAt):
			return denyDelegation(at + " has expired")
		case e.Resource != resource:
			return denyDelegation(at + " is for another resource")
		case i == 0 && e.ParentEdgeID != "":
			return denyDelegation("the path does not reach a root edge")
		case i > 0 && (e.ParentEdgeID != path[i-1].ID || e.SourceSessionID != path[i-1].TargetSessionID):
			return denyDelegation(at + " does not continue its parent")
		case i > 0 && !subset(e.Scopes, path[i-1].Scopes):
			return denyDelegation(at + " widens its parent's scopes")
		case hops-i > e.MaxHops:
			// An edge's max_hops bounds the hops from it to the leaf: at the root this is
			// the path length itself.
			return denyDelegation(at + " allows " + strconv.Itoa(e.MaxHops) + " hop(s) below it, the path needs " + strconv.Itoa(hops-i))
		}
		for _, sid := range [2]string{e.SourceSessionID, e.TargetSessionID} {
			sess, ok := d.sessions[sid]
			switch {
			case !ok:
				return denyDelegation("a session on the path does not exist")
			case sess.Status != store.StatusActive:
				return denyDelegation("a session on the path is " + sess.Status)
			case !now.Before(sess.ExpiresAt):
				return denyDelegation("a session on the path has expired")
			}
			if sess.ExpiresAt.Before(d.expires) {
				d.expires = sess.ExpiresAt
			}
		}
		if e.ExpiresAt.Before(d.expires) {
			d.expires = e.ExpiresAt
		}
	}
	return nil
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
