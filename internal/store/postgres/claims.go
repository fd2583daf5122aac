package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/store"
)

// claimLockKey is the pg_advisory_xact_lock key that serialises outbox claims. A claim
// is one short transaction, so the lock is never held across a publication.
const claimLockKey int64 = 0x6361726163616d // "caracam"

// ClaimOutbox leases the oldest pending rows to owner; see store.Store. A lease column
// rather than FOR UPDATE SKIP LOCKED: a row lock lives as long as its transaction, which
// would have to stay open across the Redis calls, and SKIP LOCKED hands a second relay
// the rows after the first one's, publishing them out of order.
func (s *Store) ClaimOutbox(ctx context.Context, owner string, limit int, lease time.Duration) ([]store.OutboxEvent, error) {
	if err := checkClaim(owner, limit, lease); err != nil {
		return nil, err
	}
	var events []store.OutboxEvent
	err := s.inTx(ctx, "claiming outbox rows", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, claimLockKey); err != nil {
			return dbErr(err, "taking the outbox claim lock")
		}
		var held bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM outbox
			WHERE published_at IS NULL AND claimed_until > now() AND claimed_by <> $1)`, owner).Scan(&held); err != nil {
			return dbErr(err, "reading outbox claims")
		}
		if held {
			return fmt.Errorf("claiming outbox rows for %q: %w", owner, store.ErrClaimed)
		}
		rows, err := tx.Query(ctx, `UPDATE outbox o SET claimed_by = $1, claimed_until = now() + make_interval(secs => $3)
			FROM (SELECT zone_id, id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $2) head
			WHERE o.zone_id = head.zone_id AND o.id = head.id
			RETURNING o.zone_id, o.id, o.stream, o.fields, o.created_at, o.published_at, o.attempts`,
			owner, limit, lease.Seconds())
		if err != nil {
			return dbErr(err, "claiming outbox rows")
		}
		if events, err = collect(rows, scanOutbox); err != nil {
			return dbErr(err, "claiming outbox rows")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(events, func(a, b store.OutboxEvent) int { return cmp.Compare(a.ID, b.ID) })
	return events, nil
}

func checkClaim(owner string, limit int, lease time.Duration) error {
	switch {
	case owner == "":
		return errors.New("claiming outbox rows: empty owner")
	case limit <= 0:
		return fmt.Errorf("claiming outbox rows: limit %d is not positive", limit)
	case lease <= 0:
		return fmt.Errorf("claiming outbox rows: lease %s is not positive", lease)
	}
	return nil
}

// OutboxWatermark returns min(now(), the oldest pending row's created_at).
func (s *Store) OutboxWatermark(ctx context.Context) (time.Time, error) {
	var w time.Time
	if err := s.pool.QueryRow(ctx, `SELECT least(now(), (SELECT min(created_at) FROM outbox WHERE published_at IS NULL))`).Scan(&w); err != nil {
		return time.Time{}, dbErr(err, "reading the outbox watermark")
	}
	return w.UTC(), nil
}

// OutboxBacklog counts the pending rows.
func (s *Store) OutboxBacklog(ctx context.Context) (store.OutboxBacklog, error) {
	var b store.OutboxBacklog
	var oldest *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT count(*), min(created_at), now() FROM outbox WHERE published_at IS NULL`).Scan(&b.Pending, &oldest, &b.Now); err != nil {
		return store.OutboxBacklog{}, dbErr(err, "counting pending outbox rows")
	}
	b.Oldest = fromNull(oldest)
	b.Now = b.Now.UTC()
	return b, nil
}

// PurgeOutbox deletes published rows older than cutoff, by key (a ctid is only unique
// within one partition).
func (s *Store) PurgeOutbox(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("purging the outbox: limit %d is not positive", limit)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM outbox o USING (
			SELECT zone_id, id FROM outbox WHERE published_at < $1 LIMIT $2
		) old WHERE o.zone_id = old.zone_id AND o.id = old.id`, ts(cutoff), limit)
	if err != nil {
		return 0, dbErr(err, "purging the outbox")
	}
	return int(tag.RowsAffected()), nil
}

// LiveRevocations pages through the zone's revoked sessions, then its revoked edges,
// whose expiry plus grace is after now. Ids compare bytewise (COLLATE "C"), as in Go.
func (s *Store) LiveRevocations(ctx context.Context, zoneID string, now time.Time, grace time.Duration, after store.RevocationCursor, limit int) ([]store.LiveRevocation, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("live revocations: limit %d is not positive", limit)
	}
	if grace < 0 {
		return nil, fmt.Errorf("live revocations: grace %s is negative", grace)
	}
	horizon := ts(now.Add(-grace))
	scan := func(edge bool) func(scanner) (store.LiveRevocation, error) {
		return func(r scanner) (store.LiveRevocation, error) {
			l := store.LiveRevocation{ZoneID: zoneID}
			var id string
			var revokedAt *time.Time
			err := r.Scan(&id, &l.Reason, &revokedAt, &l.ExpiresAt)
			if edge {
				l.EdgeID = id
			} else {
				l.SessionID = id
			}
			l.RevokedAt = fromNull(revokedAt)
			l.ExpiresAt = l.ExpiresAt.UTC()
			return l, err
		}
	}
	var out []store.LiveRevocation
	if !after.Edge {
		rows, err := s.pool.Query(ctx, `SELECT id, revoke_reason, revoked_at, expires_at FROM sessions
			WHERE zone_id = $1 AND status = 'revoked' AND expires_at > $2 AND id COLLATE "C" > $3
			ORDER BY id COLLATE "C" LIMIT $4`, zoneID, horizon, after.ID, limit)
		if err != nil {
			return nil, dbErr(err, "revoked sessions of zone %q", zoneID)
		}
		if out, err = collect(rows, scan(false)); err != nil {
			return nil, dbErr(err, "revoked sessions of zone %q", zoneID)
		}
		if len(out) == limit {
			return out, nil
		}
		after = store.RevocationCursor{Edge: true}
	}
	rows, err := s.pool.Query(ctx, `SELECT id, '', revoked_at, expires_at FROM delegation_edges
		WHERE zone_id = $1 AND status = 'revoked' AND expires_at > $2 AND id COLLATE "C" > $3
		ORDER BY id COLLATE "C" LIMIT $4`, zoneID, horizon, after.ID, limit-len(out))
	if err != nil {
		return nil, dbErr(err, "revoked edges of zone %q", zoneID)
	}
	edges, err := collect(rows, scan(true))
	if err != nil {
		return nil, dbErr(err, "revoked edges of zone %q", zoneID)
	}
	return append(out, edges...), nil
}

// PurgeExpired deletes a batch of expired inactive edges, then of expired sessions, of
// one zone, under the zone lock so that no edge is created on them meanwhile.
func (s *Store) PurgeExpired(ctx context.Context, zoneID string, cutoff time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("purging expired records: limit %d is not positive", limit)
	}
	cutoff = ts(cutoff)
	var n int
	err := s.inTx(ctx, "purging expired records", func(tx pgx.Tx) error {
		if _, err := lockZone(ctx, tx, zoneID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM delegation_edges WHERE zone_id = $1 AND id IN (
				SELECT e.id FROM delegation_edges e
				WHERE e.zone_id = $1 AND e.status <> 'active' AND e.expires_at < $2
				AND NOT EXISTS (SELECT 1 FROM delegation_edges c WHERE c.zone_id = $1 AND c.parent_edge_id = e.id)
				LIMIT $3)`, zoneID, cutoff, limit)
		if err != nil {
			return dbErr(err, "purging expired edges of zone %q", zoneID)
		}
		n = int(tag.RowsAffected())
		if n == limit {
			return nil
		}
		tag, err = tx.Exec(ctx, `DELETE FROM sessions WHERE zone_id = $1 AND id IN (
				SELECT s.id FROM sessions s
				WHERE s.zone_id = $1 AND s.expires_at < $2
				AND NOT EXISTS (SELECT 1 FROM delegation_edges e
					WHERE e.zone_id = $1 AND (e.source_session_id = s.id OR e.target_session_id = s.id))
				LIMIT $3)`, zoneID, cutoff, limit-n)
		if err != nil {
			return dbErr(err, "purging expired sessions of zone %q", zoneID)
		}
		n += int(tag.RowsAffected())
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
