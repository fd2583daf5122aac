package issuer

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/caracalgw/caracal/internal/cache"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// maxCached bounds the per-process session cache (and, separately, the edge
// cache); a full one evicts its oldest entries.
const maxCached = 100_000

// maxPathEdges bounds a cached path walk: max_hops is at most 10, so a longer chain of
// parents is not a usable path and is left to storage to answer.
const maxPathEdges = 10

// stateCache keeps active sessions and delegation edges read from storage. A session
// row only ever changes by being revoked, and every revocation reaches this process
// through the revocation pipeline (the same one the gateways trust), so while that
// pipeline is fresh an exchange needs no database read: the cached row plus a
// revocation-set lookup give the same answer. When the pipeline is stale (or absent) every exchange reads storage. Entries
// are also re-read after ttl (the refresh interval), which bounds the damage of a
// deployment whose processes do not share a transport (local bus on several processes).
type stateCache struct {
	revoked   *revocation.RevokedSet
	source    revocation.Source
	staleness time.Duration
	ttl       time.Duration

	// entries and edges hold active rows with the time they were read; a row older than
	// ttl is read again.
	entries *cache.Cache[cacheKey, cachedSession]
	edges   *cache.Cache[cacheKey, cachedEdge]
}

// cachedEdge is a delegation edge as read from storage. Like a session, an edge only
// changes by being revoked (published on the same stream) or by expiring (its ExpiresAt
// is known), so the same reasoning applies.
type cachedEdge struct {
	edge    store.Edge
	fetched time.Time
}

type cachedSession struct {
	sess    store.Session
	fetched time.Time
}

type cacheKey struct{ zone, sid string }

func newStateCache(revoked *revocation.RevokedSet, source revocation.Source, staleness, ttl time.Duration) *stateCache {
	if revoked == nil {
		return nil
	}
	return &stateCache{revoked: revoked, source: source, staleness: staleness, ttl: ttl,
		entries: cache.New[cacheKey, cachedSession](maxCached, 0, nil),
		edges:   cache.New[cacheKey, cachedEdge](maxCached, 0, nil)}
}

// fresh reports whether the revocation set can be trusted now: its source's watermark
// (every revocation acknowledged before it is applied) is within the staleness bound.
func (c *stateCache) fresh(now time.Time) bool {
	if c == nil {
		return false
	}
	if c.source == nil {
		return true
	}
	wm := c.source.Watermark()
	return !wm.IsZero() && now.Sub(wm) <= c.staleness
}

// session returns the session's current state: from the cache when the pipeline is
// fresh, else from storage (caching an active row for later).
func (s *Service) session(ctx context.Context, zoneID, sid string) (store.Session, error) {
	c := s.state
	now := s.now()
	if c.fresh(now) {
		e, ok := c.entries.Get(cacheKey{zoneID, sid})
		if ok && now.Sub(e.fetched) < c.ttl {
			sess := e.sess
			if _, hit := c.revoked.Revoked(zoneID, sid); hit {
				sess.Status = store.StatusRevoked
			}
			return sess, nil
		}
	}
	sess, err := s.store.GetSession(ctx, zoneID, sid)
	if err != nil || c == nil || sess.Status != store.StatusActive {
		return sess, err
	}
	c.put(zoneID, sess, now)
	return sess, nil
}

// put caches an active session read at now.
func (c *stateCache) put(zoneID string, sess store.Session, now time.Time) {
	c.entries.Set(cacheKey{zoneID, sess.ID}, cachedSession{sess: sess, fetched: now})
}

// pathSessions returns the zone's sessions among ids (absent ones missing), from the
// cache where it can and from storage in one query for the rest.
func (s *Service) pathSessions(ctx context.Context, zoneID string, ids []string) (map[string]store.Session, error) {
	c := s.state
	now := s.now()
	out := make(map[string]store.Session, len(ids))
	missing := ids
	if c.fresh(now) {
		missing = nil
		for _, id := range ids {
			e, ok := c.entries.Get(cacheKey{zoneID, id})
			if !ok || now.Sub(e.fetched) >= c.ttl {
				missing = append(missing, id)
				continue
			}
			sess := e.sess
			if _, hit := c.revoked.Revoked(zoneID, id); hit {
				sess.Status = store.StatusRevoked
			}
			out[id] = sess
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	found, err := s.store.Sessions(ctx, zoneID, missing)
	if err != nil {
		return nil, err
	}
	if c != nil {
		for _, sess := range found {
			if sess.Status == store.StatusActive {
				c.put(zoneID, sess, now)
			}
		}
	}
	maps.Copy(out, found)
	return out, nil
}

// edgePath returns the delegation path from the root to edgeID: from the cache while the
// revocation feed is fresh (edges found revoked in the set are marked so; cached is
// true), else, or on a miss, from storage in one query.
func (s *Service) edgePath(ctx context.Context, zoneID, edgeID string) (path []store.Edge, cached bool, err error) {
	c := s.state
	now := s.now()
	if c.fresh(now) {
		for id := edgeID; id != "" && len(path) <= maxPathEdges; {
			e, ok := c.edges.Get(cacheKey{zoneID, id})
			if !ok || now.Sub(e.fetched) >= c.ttl {
				path = nil
				break
			}
			path = append(path, e.edge)
			id = e.edge.ParentEdgeID
		}
		if len(path) > 0 && path[len(path)-1].ParentEdgeID == "" {
			slices.Reverse(path)
			for i := range path {
				if _, hit := c.revoked.Revoked(zoneID, path[i].ID); hit {
					path[i].Status = store.StatusRevoked
				}
			}
			return path, true, nil
		}
		path = nil
	}
	path, err = s.store.EdgePath(ctx, zoneID, edgeID)
	if err != nil || c == nil {
		return path, false, err
	}
	for _, e := range path {
		if e.Status == store.StatusActive {
			c.edges.Set(cacheKey{zoneID, e.ID}, cachedEdge{edge: e, fetched: now})
		}
	}
	return path, false, nil
}
