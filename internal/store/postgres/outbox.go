package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/store"
)

// outboxRow is an outbox entry written by an atomic method.
type outboxRow struct {
	stream string
	fields map[string]string
}

// insertOutbox writes rows in order, in one round trip. The id sequence is drawn in
// that order, so PendingOutbox returns them as written.
func insertOutbox(ctx context.Context, tx pgx.Tx, zoneID string, at time.Time, rows []outboxRow) error {
	batch := &pgx.Batch{}
	for _, r := range rows {
		batch.Queue(`INSERT INTO outbox (zone_id, stream, fields, created_at) VALUES ($1, $2, $3, $4)`,
			zoneID, r.stream, r.fields, at)
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return dbErr(err, "writing outbox of zone %q", zoneID)
	}
	return nil
}

const outboxColumns = `zone_id, id, stream, fields, created_at, published_at, attempts`

func scanOutbox(r scanner) (store.OutboxEvent, error) {
	var e store.OutboxEvent
	var publishedAt *time.Time
	err := r.Scan(&e.ZoneID, &e.ID, &e.Stream, &e.Fields, &e.CreatedAt, &publishedAt, &e.Attempts)
	e.CreatedAt = e.CreatedAt.UTC()
	e.PublishedAt = fromNull(publishedAt)
	return e, err
}

// AppendOutbox stores a stream entry to publish and returns it with its id.
func (s *Store) AppendOutbox(ctx context.Context, e store.OutboxEvent) (store.OutboxEvent, error) {
	// A non-nil map is stored as {} rather than null.
	fields := make(map[string]string, len(e.Fields))
	maps.Copy(fields, e.Fields)
	out, err := scanOutbox(s.pool.QueryRow(ctx, `INSERT INTO outbox (zone_id, stream, fields, created_at)
		VALUES ($1, $2, $3, $4) RETURNING `+outboxColumns, e.ZoneID, e.Stream, fields, orNow(e.CreatedAt)))
	if err != nil {
		return store.OutboxEvent{}, dbErr(err, "appending outbox entry of zone %q", e.ZoneID)
	}
	return out, nil
}

// PendingOutbox returns up to limit unpublished entries of every zone, oldest first.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]store.OutboxEvent, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pending outbox: limit %d is not positive", limit)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+outboxColumns+` FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, dbErr(err, "reading pending outbox")
	}
	events, err := collect(rows, scanOutbox)
	if err != nil {
		return nil, dbErr(err, "reading pending outbox")
	}
	return events, nil
}

// MarkPublished records the publication of an entry; the first publication time wins.
func (s *Store) MarkPublished(ctx context.Context, zoneID string, id int64, now time.Time) error {
	return s.updateOutbox(ctx, zoneID, id, `UPDATE outbox SET published_at = coalesce(published_at, $3) WHERE zone_id = $1 AND id = $2`, ts(now))
}

// MarkAttempt counts a failed publication attempt.
func (s *Store) MarkAttempt(ctx context.Context, zoneID string, id int64) error {
	return s.updateOutbox(ctx, zoneID, id, `UPDATE outbox SET attempts = attempts + 1 WHERE zone_id = $1 AND id = $2`)
}

func (s *Store) updateOutbox(ctx context.Context, zoneID string, id int64, sql string, args ...any) error {
	tag, err := s.pool.Exec(ctx, sql, append([]any{zoneID, id}, args...)...)
	if err != nil {
		return dbErr(err, "updating outbox entry %d of zone %q", id, zoneID)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("outbox entry %d of zone %q: %w", id, zoneID, store.ErrNotFound)
	}
	return nil
}

// AppendAudit records an audit event. The zone need not exist: global actions use an
// empty zone id.
func (s *Store) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	if e.Detail != nil && !json.Valid(e.Detail) {
		return fmt.Errorf("audit event %q: detail is not valid JSON", e.Action)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO audit_events (zone_id, at, actor, action, subject, detail)
		VALUES ($1, $2, $3, $4, $5, $6)`, e.ZoneID, orNow(e.At), e.Actor, e.Action, e.Subject, e.Detail); err != nil {
		return dbErr(err, "appending audit event %q", e.Action)
	}
	return nil
}

// ListAudit returns up to limit audit events of the zone, newest first.
func (s *Store) ListAudit(ctx context.Context, zoneID string, limit int) ([]store.AuditEvent, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("listing audit events: limit %d is not positive", limit)
	}
	rows, err := s.pool.Query(ctx, `SELECT zone_id, id, at, actor, action, subject, detail FROM audit_events
		WHERE zone_id = $1 ORDER BY id DESC LIMIT $2`, zoneID, limit)
	if err != nil {
		return nil, dbErr(err, "listing audit events of zone %q", zoneID)
	}
	events, err := collect(rows, func(r scanner) (store.AuditEvent, error) {
		var e store.AuditEvent
		err := r.Scan(&e.ZoneID, &e.ID, &e.At, &e.Actor, &e.Action, &e.Subject, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, dbErr(err, "listing audit events of zone %q", zoneID)
	}
	return events, nil
}
