package memory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/caracalgw/caracal/internal/store"
)

// claim is a relay's lease on a pending outbox row.
type claim struct {
	owner string
	until time.Time
}

// ClaimOutbox leases the oldest pending rows to owner until now + lease, with the
// same one-relay-at-a-time rule as the PostgreSQL store.
func (s *Store) ClaimOutbox(_ context.Context, owner string, limit int, lease time.Duration) ([]store.OutboxEvent, error) {
	switch {
	case owner == "":
		return nil, errors.New("claiming outbox rows: empty owner")
	case limit <= 0:
		return nil, fmt.Errorf("claiming outbox rows: limit %d is not positive", limit)
	case lease <= 0:
		return nil, fmt.Errorf("claiming outbox rows: lease %s is not positive", lease)
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	now := time.Now()
	for id, c := range s.claims {
		if c.owner != owner && c.until.After(now) && s.outbox[id].PublishedAt.IsZero() {
			return nil, fmt.Errorf("claiming outbox rows for %q: %w", owner, store.ErrClaimed)
		}
	}
	out := s.pendingLocked()
	out = out[:min(limit, len(out))]
	for i, e := range out {
		s.claims[e.ID] = claim{owner: owner, until: now.Add(lease)}
		out[i] = cloneOutbox(e)
	}
	return out, nil
}

// pendingLocked returns the unpublished rows, oldest first, uncloned.
func (s *Store) pendingLocked() []store.OutboxEvent {
	var out []store.OutboxEvent
	for _, e := range s.outbox {
		if e.PublishedAt.IsZero() {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b store.OutboxEvent) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// OutboxWatermark returns min(now, the oldest pending row's CreatedAt).
func (s *Store) OutboxWatermark(ctx context.Context) (time.Time, error) {
	b, err := s.OutboxBacklog(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if b.Pending > 0 && b.Oldest.Before(b.Now) {
		return b.Oldest, nil
	}
	return b.Now, nil
}

// OutboxBacklog counts the pending rows.
func (s *Store) OutboxBacklog(_ context.Context) (store.OutboxBacklog, error) {
	if err := s.rlock(); err != nil {
		return store.OutboxBacklog{}, err
	}
	defer s.mu.RUnlock()
	b := store.OutboxBacklog{Now: ts(time.Now())}
	for _, e := range s.outbox {
		if !e.PublishedAt.IsZero() {
			continue
		}
		b.Pending++
		if b.Oldest.IsZero() || e.CreatedAt.Before(b.Oldest) {
			b.Oldest = e.CreatedAt
		}
	}
	return b, nil
}

// PurgeOutbox deletes up to limit rows published before cutoff.
func (s *Store) PurgeOutbox(_ context.Context, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("purging the outbox: limit %d is not positive", limit)
	}
	if err := s.lock(); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	n := 0
	for id, e := range s.outbox {
		if n == limit {
			break
		}
		if !e.PublishedAt.IsZero() && e.PublishedAt.Before(cutoff) {
			delete(s.outbox, id)
			n++
		}
	}
	return n, nil
}

// LiveRevocations pages through the zone's revoked sessions, then its revoked edges,
// whose expiry plus grace is after now.
func (s *Store) LiveRevocations(_ context.Context, zoneID string, now time.Time, grace time.Duration, after store.RevocationCursor, limit int) ([]store.LiveRevocation, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("live revocations: limit %d is not positive", limit)
	}
	if grace < 0 {
		return nil, fmt.Errorf("live revocations: grace %s is negative", grace)
	}
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	z, ok := s.zones[zoneID]
	if !ok {
		return nil, nil
	}
	horizon := ts(now.Add(-grace))
	var out []store.LiveRevocation
	if !after.Edge {
		z.sessions.each(func(sess store.Session) {
			if sess.Status == store.StatusRevoked && sess.ExpiresAt.After(horizon) && sess.ID > after.ID {
				out = append(out, store.LiveRevocation{ZoneID: zoneID, SessionID: sess.ID, Reason: sess.RevokeReason,
					RevokedAt: sess.RevokedAt, ExpiresAt: sess.ExpiresAt})
			}
		})
		slices.SortFunc(out, func(a, b store.LiveRevocation) int { return cmp.Compare(a.SessionID, b.SessionID) })
		if len(out) >= limit {
			return out[:limit], nil
		}
		after = store.RevocationCursor{Edge: true}
	}
	var edges []store.LiveRevocation
	for _, e := range z.edges {
		if e.Status == store.StatusRevoked && e.ExpiresAt.After(horizon) && e.ID > after.ID {
			edges = append(edges, store.LiveRevocation{ZoneID: zoneID, EdgeID: e.ID, RevokedAt: e.RevokedAt, ExpiresAt: e.ExpiresAt})
		}
	}
	slices.SortFunc(edges, func(a, b store.LiveRevocation) int { return cmp.Compare(a.EdgeID, b.EdgeID) })
	return append(out, edges[:min(limit-len(out), len(edges))]...), nil
}

// PurgeExpired deletes a batch of the zone's expired inactive edges, then of its
// expired sessions, never one something still references.
func (s *Store) PurgeExpired(_ context.Context, zoneID string, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("purging expired records: limit %d is not positive", limit)
	}
	if err := s.lock(); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return 0, err
	}
	parents := make(map[string]bool)
	for _, e := range z.edges {
		if e.ParentEdgeID != "" {
			parents[e.ParentEdgeID] = true
		}
	}
	n := 0
	for id, e := range z.edges {
		if n == limit {
			return n, nil
		}
		if e.Status != store.StatusActive && e.ExpiresAt.Before(cutoff) && !parents[id] {
			delete(z.edges, id)
			n++
		}
	}
	used := make(map[string]bool)
	for _, e := range z.edges {
		used[e.SourceSessionID] = true
		used[e.TargetSessionID] = true
	}
	n += z.sessions.deleteWhere(limit-n, func(sess store.Session) bool {
		return sess.ExpiresAt.Before(cutoff) && !used[sess.ID]
	})
	return n, nil
}
