package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/store"
)

const zoneColumns = `id, name, epoch, created_at`

func scanZone(r scanner) (store.Zone, error) {
	var z store.Zone
	err := r.Scan(&z.ID, &z.Name, &z.Epoch, &z.CreatedAt)
	z.CreatedAt = z.CreatedAt.UTC()
	return z, err
}

// CreateZone creates a zone with its first active signing key.
func (s *Store) CreateZone(ctx context.Context, z store.Zone, key store.SigningKey) error {
	if key.ZoneID != "" && key.ZoneID != z.ID {
		return fmt.Errorf("creating zone %q: signing key belongs to zone %q", z.ID, key.ZoneID)
	}
	return s.inTx(ctx, "creating zone", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO zones (id, name, epoch, created_at) VALUES ($1, $2, 0, $3)`,
			z.ID, z.Name, orNow(z.CreatedAt)); err != nil {
			return dbErr(err, "creating zone %q", z.ID)
		}
		return insertActiveKey(ctx, tx, z.ID, key)
	})
}

// GetZone returns a zone.
func (s *Store) GetZone(ctx context.Context, zoneID string) (store.Zone, error) {
	z, err := scanZone(s.pool.QueryRow(ctx, `SELECT `+zoneColumns+` FROM zones WHERE id = $1`, zoneID))
	if err != nil {
		return store.Zone{}, dbErr(err, "zone %q", zoneID)
	}
	return z, nil
}

// ListZones returns every zone ordered by id.
func (s *Store) ListZones(ctx context.Context) ([]store.Zone, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+zoneColumns+` FROM zones ORDER BY id`)
	if err != nil {
		return nil, dbErr(err, "listing zones")
	}
	zones, err := collect(rows, scanZone)
	if err != nil {
		return nil, dbErr(err, "listing zones")
	}
	return zones, nil
}

// Epoch returns the zone's delegation graph epoch.
func (s *Store) Epoch(ctx context.Context, zoneID string) (int64, error) {
	var epoch int64
	if err := s.pool.QueryRow(ctx, `SELECT epoch FROM zones WHERE id = $1`, zoneID).Scan(&epoch); err != nil {
		return 0, dbErr(err, "epoch of zone %q", zoneID)
	}
	return epoch, nil
}

const applicationColumns = `zone_id, id, name, secret_hash, disabled, created_at`

// CreateApplication registers an application; ErrConflict if the client id exists.
func (s *Store) CreateApplication(ctx context.Context, a store.Application) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO applications (`+applicationColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		a.ZoneID, a.ClientID, a.Name, a.SecretHash, a.Disabled, orNow(a.CreatedAt)); err != nil {
		return dbErr(err, "creating application %q in zone %q", a.ClientID, a.ZoneID)
	}
	return nil
}

// PutApplication creates an application or replaces its name, secret hash and
// disabled flag.
func (s *Store) PutApplication(ctx context.Context, a store.Application) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO applications (`+applicationColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (zone_id, id) DO UPDATE
		SET name = excluded.name, secret_hash = excluded.secret_hash, disabled = excluded.disabled`,
		a.ZoneID, a.ClientID, a.Name, a.SecretHash, a.Disabled, orNow(a.CreatedAt)); err != nil {
		return dbErr(err, "storing application %q in zone %q", a.ClientID, a.ZoneID)
	}
	return nil
}

// GetApplication returns an application of the zone.
func (s *Store) GetApplication(ctx context.Context, zoneID, clientID string) (store.Application, error) {
	var a store.Application
	err := s.pool.QueryRow(ctx, `SELECT `+applicationColumns+` FROM applications WHERE zone_id = $1 AND id = $2`, zoneID, clientID).
		Scan(&a.ZoneID, &a.ClientID, &a.Name, &a.SecretHash, &a.Disabled, &a.CreatedAt)
	if err != nil {
		return store.Application{}, dbErr(err, "application %q in zone %q", clientID, zoneID)
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return a, nil
}

const resourceColumns = `zone_id, id, identifier, scopes, archived, created_at`

// CreateResource registers a resource; ErrConflict if its id or identifier exists.
func (s *Store) CreateResource(ctx context.Context, r store.Resource) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO resources (`+resourceColumns+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		r.ZoneID, r.ID, r.Identifier, nonNil(r.Scopes), r.Archived, orNow(r.CreatedAt)); err != nil {
		return dbErr(err, "creating resource %q in zone %q", r.Identifier, r.ZoneID)
	}
	return nil
}

// PutResource creates a resource or replaces the scopes and archived flag of the
// resource with the same identifier.
func (s *Store) PutResource(ctx context.Context, r store.Resource) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO resources (`+resourceColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (zone_id, identifier) DO UPDATE SET scopes = excluded.scopes, archived = excluded.archived`,
		r.ZoneID, r.ID, r.Identifier, nonNil(r.Scopes), r.Archived, orNow(r.CreatedAt)); err != nil {
		return dbErr(err, "storing resource %q in zone %q", r.Identifier, r.ZoneID)
	}
	return nil
}

// GetResource returns the zone's resource with the given identifier.
func (s *Store) GetResource(ctx context.Context, zoneID, identifier string) (store.Resource, error) {
	var r store.Resource
	err := s.pool.QueryRow(ctx, `SELECT `+resourceColumns+` FROM resources WHERE zone_id = $1 AND identifier = $2`, zoneID, identifier).
		Scan(&r.ZoneID, &r.ID, &r.Identifier, &r.Scopes, &r.Archived, &r.CreatedAt)
	if err != nil {
		return store.Resource{}, dbErr(err, "resource %q in zone %q", identifier, zoneID)
	}
	r.CreatedAt = r.CreatedAt.UTC()
	return r, nil
}

// ZoneScopes returns the sorted union of the scopes of the zone's unarchived resources.
func (s *Store) ZoneScopes(ctx context.Context, zoneID string) ([]string, error) {
	var exists bool
	var scopes []string
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM zones WHERE id = $1),
		COALESCE((SELECT array_agg(DISTINCT sc ORDER BY sc) FROM resources, unnest(scopes) AS sc
			WHERE zone_id = $1 AND NOT archived), '{}')`, zoneID).Scan(&exists, &scopes)
	if err != nil {
		return nil, dbErr(err, "scopes of zone %q", zoneID)
	}
	if !exists {
		return nil, fmt.Errorf("zone %q: %w", zoneID, store.ErrNotFound)
	}
	if scopes == nil {
		scopes = []string{}
	}
	return scopes, nil
}

const signingKeyColumns = `zone_id, id, sealed, public_jwk, status, created_at, activates_at, retired_at, not_after`

func scanSigningKey(r scanner) (store.SigningKey, error) {
	var k store.SigningKey
	var activatesAt, retiredAt, notAfter *time.Time
	err := r.Scan(&k.ZoneID, &k.KID, &k.Sealed, &k.PublicJWK, &k.Status, &k.CreatedAt, &activatesAt, &retiredAt, &notAfter)
	k.CreatedAt = k.CreatedAt.UTC()
	k.ActivatesAt = fromNull(activatesAt)
	k.RetiredAt = fromNull(retiredAt)
	k.NotAfter = fromNull(notAfter)
	return k, err
}

// SigningKeys returns the active key, then retired keys whose NotAfter is after now,
// most recently retired first.
func (s *Store) SigningKeys(ctx context.Context, zoneID string, now time.Time) ([]store.SigningKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys
		WHERE zone_id = $1 AND (status = 'active' OR not_after > $2)
		ORDER BY status = 'active' DESC, retired_at DESC, id`, zoneID, ts(now))
	if err != nil {
		return nil, dbErr(err, "signing keys of zone %q", zoneID)
	}
	keys, err := collect(rows, scanSigningKey)
	if err != nil {
		return nil, dbErr(err, "signing keys of zone %q", zoneID)
	}
	// Every zone has an active key from its creation on, so no key means no zone.
	if len(keys) == 0 {
		return nil, fmt.Errorf("signing keys of zone %q: %w", zoneID, store.ErrNotFound)
	}
	return keys, nil
}

// RevokedSigningKeys returns the zone's keys revoked at or after since, oldest first.
func (s *Store) RevokedSigningKeys(ctx context.Context, zoneID string, since time.Time) ([]store.SigningKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+signingKeyColumns+` FROM signing_keys
		WHERE zone_id = $1 AND status = 'revoked' AND retired_at >= $2
		ORDER BY retired_at, id`, zoneID, ts(since))
	if err != nil {
		return nil, dbErr(err, "revoked signing keys of zone %q", zoneID)
	}
	keys, err := collect(rows, scanSigningKey)
	if err != nil {
		return nil, dbErr(err, "revoked signing keys of zone %q", zoneID)
	}
	return keys, nil
}

// RotateSigningKey makes next the active key and retires or revokes the key it replaces.
func (s *Store) RotateSigningKey(ctx context.Context, zoneID string, next store.SigningKey, r store.KeyRotation) error {
	if next.ZoneID != "" && next.ZoneID != zoneID {
		return fmt.Errorf("rotating signing key of zone %q: key belongs to zone %q", zoneID, next.ZoneID)
	}
	now := ts(r.Now)
	retireAt := now
	if r.ActivateAt.After(now) {
		retireAt = ts(r.ActivateAt)
	}
	return s.inTx(ctx, "rotating signing key", func(tx pgx.Tx) error {
		if _, err := lockZone(ctx, tx, zoneID); err != nil {
			return err
		}
		var pending *time.Time
		err := tx.QueryRow(ctx, `SELECT activates_at FROM signing_keys
			WHERE zone_id = $1 AND status = 'active' AND activates_at > $2`, zoneID, now).Scan(&pending)
		switch {
		case err == nil && !r.Revoke:
			return fmt.Errorf("signing key of zone %q activates at %s: %w", zoneID, pending.UTC().Format(time.RFC3339), store.ErrConflict)
		case err != nil && !errors.Is(err, pgx.ErrNoRows):
			return dbErr(err, "reading signing keys of zone %q", zoneID)
		}
		if r.Revoke {
			// The signing key is the active one, or, while a rotation is pending, the
			// retired one whose retirement lies ahead; the pending key goes too.
			if _, err := tx.Exec(ctx, `UPDATE signing_keys SET status = 'revoked', retired_at = $2, not_after = $2
				WHERE zone_id = $1 AND (status = 'active' OR (status = 'retired' AND retired_at > $2))`, zoneID, now); err != nil {
				return dbErr(err, "revoking signing key of zone %q", zoneID)
			}
		} else if _, err := tx.Exec(ctx, `UPDATE signing_keys SET status = 'retired', retired_at = $2, not_after = $3
			WHERE zone_id = $1 AND status = 'active'`, zoneID, retireAt, nullTime(r.RetireUntil)); err != nil {
			return dbErr(err, "retiring signing key of zone %q", zoneID)
		}
		if retireAt.After(now) {
			next.ActivatesAt = retireAt
		} else {
			next.ActivatesAt = time.Time{}
		}
		if err := insertActiveKey(ctx, tx, zoneID, next); err != nil {
			return err
		}
		if r.Outbox != nil {
			return insertOutbox(ctx, tx, zoneID, now, []outboxRow{{stream: r.Outbox.Stream, fields: r.Outbox.Fields}})
		}
		return nil
	})
}

func insertActiveKey(ctx context.Context, tx pgx.Tx, zoneID string, k store.SigningKey) error {
	if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (zone_id, id, sealed, public_jwk, status, created_at, activates_at)
		VALUES ($1, $2, $3, $4, 'active', $5, $6)`,
		zoneID, k.KID, nonNil(k.Sealed), nonNil(k.PublicJWK), orNow(k.CreatedAt), nullTime(k.ActivatesAt)); err != nil {
		return dbErr(err, "storing signing key %q of zone %q", k.KID, zoneID)
	}
	return nil
}

const policyBundleColumns = `zone_id, id, modules, data, active, created_at`

// PutPolicyBundle stores the next bundle version and makes it the active one.
func (s *Store) PutPolicyBundle(ctx context.Context, zoneID string, modules map[string]string, data json.RawMessage, now time.Time) (store.PolicyBundle, error) {
	if data != nil && !json.Valid(data) {
		return store.PolicyBundle{}, fmt.Errorf("storing policy bundle of zone %q: data is not valid JSON", zoneID)
	}
	b := store.PolicyBundle{
		ZoneID:    zoneID,
		Modules:   make(map[string]string, len(modules)),
		Data:      data,
		Active:    true,
		CreatedAt: ts(now),
	}
	maps.Copy(b.Modules, modules)
	err := s.inTx(ctx, "storing policy bundle", func(tx pgx.Tx) error {
		if _, err := lockZone(ctx, tx, zoneID); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(id), 0) + 1 FROM policy_bundles WHERE zone_id = $1`, zoneID).Scan(&b.Version); err != nil {
			return dbErr(err, "next policy version of zone %q", zoneID)
		}
		if _, err := tx.Exec(ctx, `UPDATE policy_bundles SET active = false WHERE zone_id = $1 AND active`, zoneID); err != nil {
			return dbErr(err, "deactivating policy bundle of zone %q", zoneID)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO policy_bundles (`+policyBundleColumns+`) VALUES ($1, $2, $3, $4, true, $5)`,
			zoneID, b.Version, b.Modules, b.Data, b.CreatedAt); err != nil {
			return dbErr(err, "storing policy bundle of zone %q", zoneID)
		}
		return nil
	})
	if err != nil {
		return store.PolicyBundle{}, err
	}
	b.Data = append(json.RawMessage(nil), data...)
	return b, nil
}

// ActivePolicyBundle returns the zone's active bundle.
func (s *Store) ActivePolicyBundle(ctx context.Context, zoneID string) (store.PolicyBundle, error) {
	var b store.PolicyBundle
	err := s.pool.QueryRow(ctx, `SELECT `+policyBundleColumns+` FROM policy_bundles WHERE zone_id = $1 AND active`, zoneID).
		Scan(&b.ZoneID, &b.Version, &b.Modules, &b.Data, &b.Active, &b.CreatedAt)
	if err != nil {
		return store.PolicyBundle{}, dbErr(err, "active policy bundle of zone %q", zoneID)
	}
	b.CreatedAt = b.CreatedAt.UTC()
	return b, nil
}

const adminTokenColumns = `id, zone_id, capability, hash, created_at, revoked_at`

// CreateAdminToken stores a token; ErrConflict if its id or hash exists.
func (s *Store) CreateAdminToken(ctx context.Context, t store.AdminToken) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO admin_tokens (id, zone_id, capability, hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
		t.ID, nullString(t.ZoneID), t.Capability, nonNil(t.Hash), orNow(t.CreatedAt)); err != nil {
		return dbErr(err, "creating admin token %q", t.ID)
	}
	return nil
}

// AdminTokenByHash returns the token with the given hash, revoked or not.
func (s *Store) AdminTokenByHash(ctx context.Context, hash []byte) (store.AdminToken, error) {
	var t store.AdminToken
	var zoneID *string
	var revokedAt *time.Time
	err := s.pool.QueryRow(ctx, `SELECT `+adminTokenColumns+` FROM admin_tokens WHERE hash = $1`, nonNil(hash)).
		Scan(&t.ID, &zoneID, &t.Capability, &t.Hash, &t.CreatedAt, &revokedAt)
	if err != nil {
		return store.AdminToken{}, dbErr(err, "admin token")
	}
	t.ZoneID = fromNullString(zoneID)
	t.CreatedAt = t.CreatedAt.UTC()
	t.RevokedAt = fromNull(revokedAt)
	return t, nil
}

// RevokeAdminToken revokes a token; revoking a revoked token keeps its first
// revocation time.
func (s *Store) RevokeAdminToken(ctx context.Context, id string, now time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE admin_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1`, id, ts(now))
	if err != nil {
		return dbErr(err, "revoking admin token %q", id)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("admin token %q: %w", id, store.ErrNotFound)
	}
	return nil
}
