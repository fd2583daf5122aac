package issuer

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// DefaultPublishWait bounds how long a revoke's answer waits for the outbox relay to
// publish the revocation's rows.
const DefaultPublishWait = 250 * time.Millisecond

// ApplyRevocation makes a revocation this process just stored hold in this process at
// once, before the event's round trip through the transport: the session and every
// revoked edge (cascaded descendants included) go into the revocation set, the zone's
// epoch moves to the revocation's, and the cached rows are dropped. Every revoke path
// (RFC 7009 here, the Coordinator's session and edge revokes) calls it right after the
// store's answer; an exchange that starts afterwards in this process is refused, and so
// is the revoked mandate at a gateway sharing the revocation set.
func (s *Service) ApplyRevocation(zoneID string, rev store.Revocation) {
	if s.opts.Revocations != nil {
		if sess := rev.Session; sess != nil {
			s.opts.Revocations.Add(revocation.Event{ZoneID: zoneID, SessionID: sess.ID, Reason: sess.RevokeReason, RevokedAt: sess.RevokedAt, ExpiresAt: sess.ExpiresAt})
		}
		for _, e := range rev.Edges {
			s.opts.Revocations.Add(revocation.Event{ZoneID: zoneID, DelegationEdgeID: e.ID, RevokedAt: e.RevokedAt, ExpiresAt: e.ExpiresAt})
		}
	}
	if len(rev.Edges) > 0 {
		s.observeEpoch(zoneID, rev.Epoch, rev.Edges[len(rev.Edges)-1].ID, "revoke")
	}
	var sids []string
	if rev.Session != nil {
		sids = []string{rev.Session.ID}
	}
	s.state.drop(zoneID, sids, rev.Edges)
}

// ApplyExpiry is ApplyRevocation for edges the expiry sweep marked expired: nothing is
// revoked (no mandate outlives its edge), but the zone's epoch moves to the sweep's and
// the cached rows are dropped.
func (s *Service) ApplyExpiry(zoneID string, edges []store.Edge, epoch int64) {
	if len(edges) == 0 {
		return
	}
	s.observeEpoch(zoneID, epoch, edges[len(edges)-1].ID, "expire")
	s.state.drop(zoneID, nil, edges)
}

func (s *Service) observeEpoch(zoneID string, epoch int64, edgeID, event string) {
	if s.opts.Epochs != nil {
		s.opts.Epochs.Observe(revocation.EpochEvent{ZoneID: zoneID, Epoch: epoch, EdgeID: edgeID, Event: event})
	}
}

// AwaitPublication waits, for at most Options.PublishWait, until the outbox rows
// committed before the call have been published (Options.Published), and reports
// whether they were. When the bound passes it logs at WARN and returns false: the
// revocation is durable and applied in this process, and the relay keeps trying. Without
// Options.Published it returns false at once. zoneID may be empty (a sweep of every zone).
func (s *Service) AwaitPublication(ctx context.Context, zoneID, what string) bool {
	if s.opts.Published == nil {
		return false
	}
	wait, cancel := context.WithTimeout(ctx, s.opts.PublishWait)
	defer cancel()
	if err := s.opts.Published(wait); err != nil {
		if ctx.Err() != nil {
			// The caller went away (client gone, shutdown): nobody to warn.
			return false
		}
		fields := []zap.Field{zap.String("change", what), zap.Duration("bound", s.opts.PublishWait), zap.Error(err)}
		if zoneID != "" {
			fields = append(fields, zap.String("zone", zoneID))
		}
		s.log.Warn("revocation stored and applied in this process but not yet published; the relay keeps trying", fields...)
		return false
	}
	return true
}

// drop removes the cached sessions and edges, so that the next exchange reads them
// again (the revocation set already refuses them; this keeps no stale row around).
func (c *stateCache) drop(zoneID string, sids []string, edges []store.Edge) {
	if c == nil {
		return
	}
	for _, sid := range sids {
		c.entries.Delete(cacheKey{zoneID, sid})
	}
	for _, e := range edges {
		c.edges.Delete(cacheKey{zoneID, e.ID})
	}
}
