package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

const sessionColumns = `zone_id, id, client_id, status, created_at, expires_at, revoked_at, revoke_reason`

func scanSession(r scanner) (store.Session, error) {
	var s store.Session
	var revokedAt *time.Time
	err := r.Scan(&s.ZoneID, &s.ID, &s.ClientID, &s.Status, &s.CreatedAt, &s.ExpiresAt, &revokedAt, &s.RevokeReason)
	s.CreatedAt = s.CreatedAt.UTC()
	s.ExpiresAt = s.ExpiresAt.UTC()
	s.RevokedAt = fromNull(revokedAt)
	return s, err
}

func getSession(ctx context.Context, q querier, zoneID, sid string) (store.Session, error) {
	s, err := scanSession(q.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE zone_id = $1 AND id = $2`, zoneID, sid))
	if err != nil {
		return store.Session{}, dbErr(err, "session %q in zone %q", sid, zoneID)
	}
	return s, nil
}

// Sessions returns the zone's sessions among ids in one query.
func (s *Store) Sessions(ctx context.Context, zoneID string, ids []string) (map[string]store.Session, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE zone_id = $1 AND id = ANY($2)`, zoneID, ids)
	if err != nil {
		return nil, dbErr(err, "sessions in zone %q", zoneID)
	}
	list, err := collect(rows, scanSession)
	if err != nil {
		return nil, dbErr(err, "sessions in zone %q", zoneID)
	}
	out := make(map[string]store.Session, len(list))
	for _, sess := range list {
		out[sess.ID] = sess
	}
	return out, nil
}

// CreateSession stores an active session of a registered application.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO sessions (zone_id, id, client_id, status, created_at, expires_at)
		VALUES ($1, $2, $3, 'active', $4, $5)`,
		sess.ZoneID, sess.ID, sess.ClientID, orNow(sess.CreatedAt), ts(sess.ExpiresAt)); err != nil {
		return dbErr(err, "creating session %q in zone %q", sess.ID, sess.ZoneID)
	}
	return nil
}

// GetSession returns a session of the zone.
func (s *Store) GetSession(ctx context.Context, zoneID, sid string) (store.Session, error) {
	return getSession(ctx, s.pool, zoneID, sid)
}

// RevokeSession revokes the session, every edge it is the source or target of and
// their descendants, in one transaction under the zone lock.
func (s *Store) RevokeSession(ctx context.Context, zoneID, sid, reason string, now time.Time) (store.Revocation, error) {
	now = ts(now)
	var rev store.Revocation
	err := s.inTx(ctx, "revoking session", func(tx pgx.Tx) error {
		epoch, err := lockZone(ctx, tx, zoneID)
		if err != nil {
			return err
		}
		sess, err := getSession(ctx, tx, zoneID, sid)
		if err != nil {
			return err
		}
		if sess.Status == store.StatusRevoked {
			rev = store.Revocation{Session: &sess, Epoch: epoch}
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE sessions SET status = 'revoked', revoked_at = $3, revoke_reason = $4
			WHERE zone_id = $1 AND id = $2`, zoneID, sid, now, reason); err != nil {
			return dbErr(err, "revoking session %q in zone %q", sid, zoneID)
		}
		sess.Status = store.StatusRevoked
		sess.RevokedAt = now
		sess.RevokeReason = reason
		rows, err := tx.Query(ctx, `SELECT id FROM delegation_edges
			WHERE zone_id = $1 AND (source_session_id = $2 OR target_session_id = $2)`, zoneID, sid)
		if err != nil {
			return dbErr(err, "edges of session %q in zone %q", sid, zoneID)
		}
		roots, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return dbErr(err, "edges of session %q in zone %q", sid, zoneID)
		}
		out := []outboxRow{{revocation.StreamSessionsRevoke, revocation.Event{ZoneID: zoneID, SessionID: sid, Reason: reason, RevokedAt: now, ExpiresAt: sess.ExpiresAt}.Fields()}}
		edges, epoch, edgeRows, err := revokeEdges(ctx, tx, zoneID, roots, reason, now, epoch)
		if err != nil {
			return err
		}
		if err := insertOutbox(ctx, tx, zoneID, now, append(out, edgeRows...)); err != nil {
			return err
		}
		rev = store.Revocation{Session: &sess, Edges: edges, Epoch: epoch}
		return nil
	})
	if err != nil {
		return store.Revocation{}, err
	}
	return rev, nil
}

const edgeColumns = `zone_id, id, source_session_id, target_session_id, resource, scopes, expires_at, max_hops,
	parent_edge_id, status, created_at, revoked_at, epoch`

func scanEdge(r scanner) (store.Edge, error) {
	var e store.Edge
	var parent *string
	var revokedAt *time.Time
	err := r.Scan(&e.ZoneID, &e.ID, &e.SourceSessionID, &e.TargetSessionID, &e.Resource, &e.Scopes, &e.ExpiresAt,
		&e.MaxHops, &parent, &e.Status, &e.CreatedAt, &revokedAt, &e.Epoch)
	e.ParentEdgeID = fromNullString(parent)
	e.ExpiresAt = e.ExpiresAt.UTC()
	e.CreatedAt = e.CreatedAt.UTC()
	e.RevokedAt = fromNull(revokedAt)
	return e, err
}

func getEdge(ctx context.Context, q querier, zoneID, edgeID string) (store.Edge, error) {
	e, err := scanEdge(q.QueryRow(ctx, `SELECT `+edgeColumns+` FROM delegation_edges WHERE zone_id = $1 AND id = $2`, zoneID, edgeID))
	if err != nil {
		return store.Edge{}, dbErr(err, "edge %q in zone %q", edgeID, zoneID)
	}
	return e, nil
}

// revokeEdges revokes the active edges among roots and their descendants, and bumps
// the epoch once if any changed. It returns the revoked edges in creation order, the
// zone epoch and the outbox rows to write. The walk goes through edges of every status
// so an active edge below an inactive one is still reached; UNION stops it on a cycle.
func revokeEdges(ctx context.Context, tx pgx.Tx, zoneID string, roots []string, reason string, now time.Time, epoch int64) ([]store.Edge, int64, []outboxRow, error) {
	if len(roots) == 0 {
		return nil, epoch, nil, nil
	}
	rows, err := tx.Query(ctx, `WITH RECURSIVE tree (edge_id) AS (
			SELECT id FROM delegation_edges WHERE zone_id = $1 AND id = ANY($2)
		UNION
			SELECT e.id FROM delegation_edges e JOIN tree ON e.parent_edge_id = tree.edge_id WHERE e.zone_id = $1
		)
		UPDATE delegation_edges SET status = 'revoked', revoked_at = $3
		FROM tree WHERE zone_id = $1 AND id = tree.edge_id AND status = 'active'
		RETURNING `+edgeColumns, zoneID, roots, now)
	if err != nil {
		return nil, 0, nil, dbErr(err, "revoking edges in zone %q", zoneID)
	}
	edges, err := collect(rows, scanEdge)
	if err != nil {
		return nil, 0, nil, dbErr(err, "revoking edges in zone %q", zoneID)
	}
	if len(edges) == 0 {
		return nil, epoch, nil, nil
	}
	if epoch, err = bumpEpoch(ctx, tx, zoneID); err != nil {
		return nil, 0, nil, err
	}
	sortEdges(edges)
	out := make([]outboxRow, 0, 2*len(edges))
	for _, e := range edges {
		out = append(out,
			outboxRow{revocation.StreamSessionsRevoke, revocation.Event{ZoneID: zoneID, DelegationEdgeID: e.ID, Reason: reason, RevokedAt: now, ExpiresAt: e.ExpiresAt}.Fields()},
			outboxRow{revocation.StreamDelegationInvalidate, revocation.EpochEvent{ZoneID: zoneID, Epoch: epoch, EdgeID: e.ID, Event: revocation.EpochRevoke}.Fields()})
	}
	return edges, epoch, out, nil
}

// sortEdges orders edges by creation, then id, the order both implementations use for
// results and outbox rows.
func sortEdges(edges []store.Edge) {
	slices.SortFunc(edges, func(a, b store.Edge) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// CreateEdge inserts an active edge after check accepted it, bumping the epoch, in one
// transaction under the zone lock so check sees the graph the edge joins.
func (s *Store) CreateEdge(ctx context.Context, e store.Edge, check store.EdgeCheck) (store.Edge, error) {
	e.Status = store.StatusActive
	e.CreatedAt = orNow(e.CreatedAt)
	e.ExpiresAt = ts(e.ExpiresAt)
	e.RevokedAt = time.Time{}
	e.Scopes = append([]string{}, e.Scopes...)
	var checkErr error
	err := s.inTx(ctx, "creating edge", func(tx pgx.Tx) error {
		if _, err := lockZone(ctx, tx, e.ZoneID); err != nil {
			return err
		}
		source, err := getSession(ctx, tx, e.ZoneID, e.SourceSessionID)
		if err != nil {
			return fmt.Errorf("source of edge %q: %w", e.ID, err)
		}
		target, err := getSession(ctx, tx, e.ZoneID, e.TargetSessionID)
		if err != nil {
			return fmt.Errorf("target of edge %q: %w", e.ID, err)
		}
		var parent *store.Edge
		if e.ParentEdgeID != "" {
			p, err := getEdge(ctx, tx, e.ZoneID, e.ParentEdgeID)
			if err != nil {
				return fmt.Errorf("parent of edge %q: %w", e.ID, err)
			}
			parent = &p
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT true FROM resources WHERE zone_id = $1 AND identifier = $2`, e.ZoneID, e.Resource).Scan(&exists); err != nil {
			return dbErr(err, "resource %q of edge %q", e.Resource, e.ID)
		}
		if check != nil {
			if checkErr = check(parent, source, target); checkErr != nil {
				return checkErr
			}
		}
		if e.Epoch, err = bumpEpoch(ctx, tx, e.ZoneID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO delegation_edges (`+edgeColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12)`,
			e.ZoneID, e.ID, e.SourceSessionID, e.TargetSessionID, e.Resource, e.Scopes, e.ExpiresAt, e.MaxHops,
			nullString(e.ParentEdgeID), e.Status, e.CreatedAt, e.Epoch); err != nil {
			return dbErr(err, "creating edge %q in zone %q", e.ID, e.ZoneID)
		}
		return insertOutbox(ctx, tx, e.ZoneID, e.CreatedAt, []outboxRow{
			{revocation.StreamDelegationInvalidate, revocation.EpochEvent{ZoneID: e.ZoneID, Epoch: e.Epoch, EdgeID: e.ID, Event: revocation.EpochCreate}.Fields()},
		})
	})
	if checkErr != nil {
		return store.Edge{}, checkErr
	}
	if err != nil {
		return store.Edge{}, err
	}
	return e, nil
}

// GetEdge returns an edge of the zone.
func (s *Store) GetEdge(ctx context.Context, zoneID, edgeID string) (store.Edge, error) {
	return getEdge(ctx, s.pool, zoneID, edgeID)
}

// EdgePath returns the edges from the root of edgeID's chain down to edgeID.
func (s *Store) EdgePath(ctx context.Context, zoneID, edgeID string) ([]store.Edge, error) {
	rows, err := s.pool.Query(ctx, `WITH RECURSIVE path AS (
			SELECT e.*, 0 AS depth FROM delegation_edges e WHERE e.zone_id = $1 AND e.id = $2
		UNION ALL
			SELECT p.*, path.depth + 1 FROM delegation_edges p JOIN path ON p.id = path.parent_edge_id
			WHERE p.zone_id = $1
		)
		SELECT `+edgeColumns+` FROM path ORDER BY depth DESC`, zoneID, edgeID)
	if err != nil {
		return nil, dbErr(err, "path of edge %q in zone %q", edgeID, zoneID)
	}
	path, err := collect(rows, scanEdge)
	if err != nil {
		return nil, dbErr(err, "path of edge %q in zone %q", edgeID, zoneID)
	}
	if len(path) == 0 {
		return nil, fmt.Errorf("edge %q in zone %q: %w", edgeID, zoneID, store.ErrNotFound)
	}
	return path, nil
}

// RevokeEdge revokes an active edge and its active descendants in one transaction
// under the zone lock.
func (s *Store) RevokeEdge(ctx context.Context, zoneID, edgeID, reason string, now time.Time) (store.Revocation, error) {
	now = ts(now)
	var rev store.Revocation
	err := s.inTx(ctx, "revoking edge", func(tx pgx.Tx) error {
		epoch, err := lockZone(ctx, tx, zoneID)
		if err != nil {
			return err
		}
		e, err := getEdge(ctx, tx, zoneID, edgeID)
		if err != nil {
			return err
		}
		if e.Status != store.StatusActive {
			rev = store.Revocation{Epoch: epoch}
			return nil
		}
		edges, epoch, out, err := revokeEdges(ctx, tx, zoneID, []string{edgeID}, reason, now, epoch)
		if err != nil {
			return err
		}
		if err := insertOutbox(ctx, tx, zoneID, now, out); err != nil {
			return err
		}
		rev = store.Revocation{Edges: edges, Epoch: epoch}
		return nil
	})
	if err != nil {
		return store.Revocation{}, err
	}
	return rev, nil
}

// ExpireEdges marks active edges whose expiry has passed as expired, in one
// transaction under the zone lock.
func (s *Store) ExpireEdges(ctx context.Context, zoneID string, now time.Time) ([]store.Edge, int64, error) {
	now = ts(now)
	var edges []store.Edge
	var epoch int64
	err := s.inTx(ctx, "expiring edges", func(tx pgx.Tx) error {
		var err error
		if epoch, err = lockZone(ctx, tx, zoneID); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE delegation_edges SET status = 'expired'
			WHERE zone_id = $1 AND status = 'active' AND expires_at <= $2
			RETURNING `+edgeColumns, zoneID, now)
		if err != nil {
			return dbErr(err, "expiring edges in zone %q", zoneID)
		}
		if edges, err = collect(rows, scanEdge); err != nil {
			return dbErr(err, "expiring edges in zone %q", zoneID)
		}
		if len(edges) == 0 {
			edges = nil
			return nil
		}
		if epoch, err = bumpEpoch(ctx, tx, zoneID); err != nil {
			return err
		}
		sortEdges(edges)
		out := make([]outboxRow, len(edges))
		for i, e := range edges {
			out[i] = outboxRow{revocation.StreamDelegationInvalidate, revocation.EpochEvent{ZoneID: zoneID, Epoch: epoch, EdgeID: e.ID, Event: revocation.EpochExpire}.Fields()}
		}
		return insertOutbox(ctx, tx, zoneID, now, out)
	})
	if err != nil {
		return nil, 0, err
	}
	return edges, epoch, nil
}
