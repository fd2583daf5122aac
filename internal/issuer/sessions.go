package issuer

import (
	"context"
	"sync"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// maxCachedSessions bounds the per-process session cache.
const maxCachedSessions = 100_000

// sessionCache keeps active sessions read from storage. A session row only ever changes
// by being revoked, and every revocation reaches this process through the revocation
// pipeline (the same one the gateways trust), so while that pipeline is fresh an exchange
// needs no database read: the cached row plus a revocation-set lookup give the same
// answer. When the pipeline is stale (or absent) every exchange reads storage. Entries
// are also re-read after ttl (the refresh interval), which bounds the damage of a
// deployment whose processes do not share a transport (local bus on several processes).
type sessionCache struct {
	revoked   *revocation.Store
	source    revocation.Source
	staleness time.Duration
	ttl       time.Duration

	mu      sync.RWMutex
	entries map[sessionKey]cachedSession
}

type cachedSession struct {
	sess    store.Session
	fetched time.Time
}

type sessionKey struct{ zone, sid string }

func newSessionCache(revoked *revocation.Store, source revocation.Source, staleness, ttl time.Duration) *sessionCache {
	if revoked == nil {
		return nil
	}
	return &sessionCache{revoked: revoked, source: source, staleness: staleness, ttl: ttl, entries: make(map[sessionKey]cachedSession)}
}

// fresh reports whether the revocation set can be trusted now.
func (c *sessionCache) fresh(now time.Time) bool {
	return c != nil && (c.source == nil || now.Sub(c.source.LastContact()) <= c.staleness)
}

// session returns the session's current state: from the cache when the pipeline is
// fresh, else from storage (caching an active row for later).
func (s *Service) session(ctx context.Context, zoneID, sid string) (store.Session, error) {
	c := s.sessions
	now := s.now()
	if c.fresh(now) {
		c.mu.RLock()
		e, ok := c.entries[sessionKey{zoneID, sid}]
		c.mu.RUnlock()
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
	c.mu.Lock()
	if len(c.entries) >= maxCachedSessions {
		for k, old := range c.entries {
			if now.Sub(old.fetched) >= c.ttl {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxCachedSessions {
			clear(c.entries)
		}
	}
	c.entries[sessionKey{zoneID, sid}] = cachedSession{sess: sess, fetched: now}
	c.mu.Unlock()
	return sess, nil
}

// recordRevocation puts a revocation made by this process into the local revocation set
// at once, so that no exchange of this process can slip between the database write and
// the event's round trip through the pipeline.
func (s *Service) recordRevocation(zoneID string, sess store.Session, at time.Time) {
	if s.sessions == nil {
		return
	}
	s.sessions.revoked.Add(revocation.Event{ZoneID: zoneID, SessionID: sess.ID, Reason: sess.RevokeReason, RevokedAt: at, ExpiresAt: sess.ExpiresAt})
}
