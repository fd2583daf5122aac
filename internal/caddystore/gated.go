package caddystore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/caracalgw/caracal/internal/store"
)

// gated is the store the apps use: every call waits until the runtime has migrated the
// storage and run the first start-up writes (the declared zones), so that no module of the configuration reads or writes an
// unmigrated database, whatever the order Caddy starts the apps in. A call whose
// context ends first, or made after the runtime closed without starting, fails with
// store.ErrUnavailable.
type gated struct {
	inner  store.Store
	ready  <-chan struct{} // closed once migrated
	closed <-chan struct{} // closed when the runtime is destroyed
}

// setupKey marks the context of the start-up writes, which run before the storage is
// opened to the other modules.
type setupKey struct{}

func (g *gated) wait(ctx context.Context) error {
	select {
	case <-g.ready:
		return nil
	default:
	}
	if ctx.Value(setupKey{}) != nil {
		return nil
	}
	select {
	case <-g.ready:
		return nil
	case <-g.closed:
		return fmt.Errorf("%w: the storage closed before it was set up", store.ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("%w: the storage is not set up yet (migrations run when the caracal_sts app starts): %w", store.ErrUnavailable, context.Cause(ctx))
	}
}

// Close does nothing: the runtime closes the store once its last reference is released.
func (g *gated) Close() error { return nil }

func (g *gated) CreateZone(ctx context.Context, z store.Zone, key store.SigningKey) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.CreateZone(ctx, z, key)
}

func (g *gated) GetZone(ctx context.Context, zoneID string) (store.Zone, error) {
	if err := g.wait(ctx); err != nil {
		return store.Zone{}, err
	}
	return g.inner.GetZone(ctx, zoneID)
}

func (g *gated) ListZones(ctx context.Context) ([]store.Zone, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.ListZones(ctx)
}

func (g *gated) CreateApplication(ctx context.Context, a store.Application) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.CreateApplication(ctx, a)
}

func (g *gated) PutApplication(ctx context.Context, a store.Application) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.PutApplication(ctx, a)
}

func (g *gated) GetApplication(ctx context.Context, zoneID, clientID string) (store.Application, error) {
	if err := g.wait(ctx); err != nil {
		return store.Application{}, err
	}
	return g.inner.GetApplication(ctx, zoneID, clientID)
}

func (g *gated) CreateResource(ctx context.Context, r store.Resource) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.CreateResource(ctx, r)
}

func (g *gated) PutResource(ctx context.Context, r store.Resource) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.PutResource(ctx, r)
}

func (g *gated) GetResource(ctx context.Context, zoneID, identifier string) (store.Resource, error) {
	if err := g.wait(ctx); err != nil {
		return store.Resource{}, err
	}
	return g.inner.GetResource(ctx, zoneID, identifier)
}

func (g *gated) ZoneScopes(ctx context.Context, zoneID string) ([]string, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.ZoneScopes(ctx, zoneID)
}

func (g *gated) SigningKeys(ctx context.Context, zoneID string, now time.Time) ([]store.SigningKey, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.SigningKeys(ctx, zoneID, now)
}

func (g *gated) RevokedSigningKeys(ctx context.Context, zoneID string, since time.Time) ([]store.SigningKey, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.RevokedSigningKeys(ctx, zoneID, since)
}

func (g *gated) RotateSigningKey(ctx context.Context, zoneID string, next store.SigningKey, r store.KeyRotation) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.RotateSigningKey(ctx, zoneID, next, r)
}

func (g *gated) PutPolicyBundle(ctx context.Context, zoneID string, modules map[string]string, data json.RawMessage, now time.Time) (store.PolicyBundle, error) {
	if err := g.wait(ctx); err != nil {
		return store.PolicyBundle{}, err
	}
	return g.inner.PutPolicyBundle(ctx, zoneID, modules, data, now)
}

func (g *gated) ActivePolicyBundle(ctx context.Context, zoneID string) (store.PolicyBundle, error) {
	if err := g.wait(ctx); err != nil {
		return store.PolicyBundle{}, err
	}
	return g.inner.ActivePolicyBundle(ctx, zoneID)
}

func (g *gated) CreateSession(ctx context.Context, s store.Session) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.CreateSession(ctx, s)
}

func (g *gated) GetSession(ctx context.Context, zoneID, sid string) (store.Session, error) {
	if err := g.wait(ctx); err != nil {
		return store.Session{}, err
	}
	return g.inner.GetSession(ctx, zoneID, sid)
}

func (g *gated) Sessions(ctx context.Context, zoneID string, ids []string) (map[string]store.Session, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.Sessions(ctx, zoneID, ids)
}

func (g *gated) RevokeSession(ctx context.Context, zoneID, sid, reason string, now time.Time) (store.Revocation, error) {
	if err := g.wait(ctx); err != nil {
		return store.Revocation{}, err
	}
	return g.inner.RevokeSession(ctx, zoneID, sid, reason, now)
}

func (g *gated) CreateEdge(ctx context.Context, e store.Edge, check store.EdgeCheck) (store.Edge, error) {
	if err := g.wait(ctx); err != nil {
		return store.Edge{}, err
	}
	return g.inner.CreateEdge(ctx, e, check)
}

func (g *gated) GetEdge(ctx context.Context, zoneID, edgeID string) (store.Edge, error) {
	if err := g.wait(ctx); err != nil {
		return store.Edge{}, err
	}
	return g.inner.GetEdge(ctx, zoneID, edgeID)
}

func (g *gated) EdgePath(ctx context.Context, zoneID, edgeID string) ([]store.Edge, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.EdgePath(ctx, zoneID, edgeID)
}

func (g *gated) RevokeEdge(ctx context.Context, zoneID, edgeID, reason string, now time.Time) (store.Revocation, error) {
	if err := g.wait(ctx); err != nil {
		return store.Revocation{}, err
	}
	return g.inner.RevokeEdge(ctx, zoneID, edgeID, reason, now)
}

func (g *gated) ExpireEdges(ctx context.Context, zoneID string, now time.Time) ([]store.Edge, int64, error) {
	if err := g.wait(ctx); err != nil {
		return nil, 0, err
	}
	return g.inner.ExpireEdges(ctx, zoneID, now)
}

func (g *gated) Epoch(ctx context.Context, zoneID string) (int64, error) {
	if err := g.wait(ctx); err != nil {
		return 0, err
	}
	return g.inner.Epoch(ctx, zoneID)
}

func (g *gated) CreateAdminToken(ctx context.Context, t store.AdminToken) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.CreateAdminToken(ctx, t)
}

func (g *gated) AdminTokenByHash(ctx context.Context, hash []byte) (store.AdminToken, error) {
	if err := g.wait(ctx); err != nil {
		return store.AdminToken{}, err
	}
	return g.inner.AdminTokenByHash(ctx, hash)
}

func (g *gated) RevokeAdminToken(ctx context.Context, id string, now time.Time) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.RevokeAdminToken(ctx, id, now)
}

func (g *gated) AppendOutbox(ctx context.Context, e store.OutboxEvent) (store.OutboxEvent, error) {
	if err := g.wait(ctx); err != nil {
		return store.OutboxEvent{}, err
	}
	return g.inner.AppendOutbox(ctx, e)
}

func (g *gated) PendingOutbox(ctx context.Context, limit int) ([]store.OutboxEvent, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.PendingOutbox(ctx, limit)
}

func (g *gated) MarkPublished(ctx context.Context, zoneID string, id int64, now time.Time) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.MarkPublished(ctx, zoneID, id, now)
}

func (g *gated) MarkAttempt(ctx context.Context, zoneID string, id int64) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.MarkAttempt(ctx, zoneID, id)
}

func (g *gated) ClaimOutbox(ctx context.Context, owner string, limit int, lease time.Duration) ([]store.OutboxEvent, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.ClaimOutbox(ctx, owner, limit, lease)
}

func (g *gated) OutboxWatermark(ctx context.Context) (time.Time, error) {
	if err := g.wait(ctx); err != nil {
		return time.Time{}, err
	}
	return g.inner.OutboxWatermark(ctx)
}

func (g *gated) OutboxBacklog(ctx context.Context) (store.OutboxBacklog, error) {
	if err := g.wait(ctx); err != nil {
		return store.OutboxBacklog{}, err
	}
	return g.inner.OutboxBacklog(ctx)
}

func (g *gated) PurgeOutbox(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	if err := g.wait(ctx); err != nil {
		return 0, err
	}
	return g.inner.PurgeOutbox(ctx, cutoff, limit)
}

func (g *gated) LiveRevocations(ctx context.Context, zoneID string, now time.Time, grace time.Duration, after store.RevocationCursor, limit int) ([]store.LiveRevocation, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.LiveRevocations(ctx, zoneID, now, grace, after, limit)
}

func (g *gated) PurgeExpired(ctx context.Context, zoneID string, cutoff time.Time, limit int) (int, error) {
	if err := g.wait(ctx); err != nil {
		return 0, err
	}
	return g.inner.PurgeExpired(ctx, zoneID, cutoff, limit)
}

func (g *gated) AppendAudit(ctx context.Context, e store.AuditEvent) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.inner.AppendAudit(ctx, e)
}

func (g *gated) ListAudit(ctx context.Context, zoneID string, limit int) ([]store.AuditEvent, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.inner.ListAudit(ctx, zoneID, limit)
}
