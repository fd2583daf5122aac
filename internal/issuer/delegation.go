package issuer

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/delegation"
	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// delegated is a delegation path validated at exchange time (docs/protocol.md section 4).
type delegated struct {
	path     []store.Edge // root first
	sessions map[string]store.Session
	epoch    int64
	expires  time.Time // the earliest expiry along the path
}

func (d *delegated) leaf() store.Edge { return d.path[len(d.path)-1] }
func (d *delegated) root() store.Edge { return d.path[0] }

// rootSession is the source session of the root edge: revoking it kills every mandate
// issued below it.
func (d *delegated) rootSession() store.Session { return d.sessions[d.root().SourceSessionID] }

func (d *delegated) ids() []string {
	ids := make([]string, len(d.path))
	for i, e := range d.path {
		ids[i] = e.ID
	}
	return ids
}

// actor is the RFC 8693 act claim: the presenting client outermost, then each earlier
// delegate back to (not including) the root client, who is the subject.
func (d *delegated) actor() *mandate.Actor {
	var act *mandate.Actor
	for _, e := range d.path {
		act = &mandate.Actor{Sub: d.sessions[e.TargetSessionID].ClientID, Act: act}
	}
	return act
}

func (d *delegated) policyInput() *policy.Delegation {
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

func denyDelegation(description string) *Error {
	return newError(http.StatusForbidden, CodeAccessDenied, "delegation invalid: "+description)
}

// resolveDelegation re-validates, against the live graph, the whole path from the leaf
// edge to the root: every rule of docs/protocol.md section 4 at exchange time (delegation.CheckPath). subject is the
// presenting session, which must be the leaf's target.
func (s *Service) resolveDelegation(ctx context.Context, zoneID, edgeID string, subject store.Session, resource string, now time.Time) (*delegated, *Error) {
	path, cached, err := s.edgePath(ctx, zoneID, edgeID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, denyDelegation("unknown delegation edge")
	case err != nil:
		s.log.Warn("delegation path lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("delegation state could not be read")
	}
	sessions, err := s.pathSessions(ctx, zoneID, delegation.PathSessions(path))
	if err != nil {
		s.log.Warn("delegation session lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("delegation state could not be read")
	}
	d := &delegated{path: path, sessions: sessions}
	var v *delegation.Violation
	if d.expires, v = delegation.CheckPath(path, sessions, subject, resource, now); v != nil {
		return nil, denyDelegation(v.Message)
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
