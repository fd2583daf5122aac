// Package store is Caracal's persistence layer: one interface, two implementations
// (PostgreSQL over pgx, and in-memory for a single process), one contract test suite.
//
// Every zone-owned record carries its ZoneID and every lookup is zone-qualified, so a
// caller cannot read or write across zones by accident. Operations that must be atomic
// (session revocation with its cascade, delegation edge changes with the epoch bump and
// the outbox rows) are single methods, serialised per zone.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/caracalgw/caracal/revocation"
)

// Sentinel errors. Implementations wrap them so callers can use errors.Is.
var (
	// ErrNotFound: the zone-qualified record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a record with the same key already exists, or a state change is not allowed.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the backing database could not be reached or failed; callers must not
	// issue anything on doubt.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrClaimed: another relay holds a live lease on pending outbox rows.
	ErrClaimed = errors.New("outbox claimed by another relay")
)

// Record states.
const (
	StatusActive  = "active"
	StatusRevoked = "revoked"
	StatusExpired = "expired"
	StatusRetired = "retired"
)

// StreamDelegationInvalidate is revocation.StreamDelegationInvalidate, the stream
// name owned by the revocation package with the rest of the wire format.
const StreamDelegationInvalidate = revocation.StreamDelegationInvalidate

// Zone is the tenant boundary.
type Zone struct {
	ID        string
	Name      string
	Epoch     int64 // delegation graph epoch
	CreatedAt time.Time
}

// Application is a registered client. SecretHash is an Argon2id PHC string; the clear
// secret is never stored.
type Application struct {
	ZoneID     string
	ClientID   string
	Name       string
	SecretHash string
	Disabled   bool
	CreatedAt  time.Time
}

// Resource is a protected API, identified by an absolute URI.
type Resource struct {
	ZoneID     string
	ID         string
	Identifier string
	Scopes     []string
	Archived   bool
	CreatedAt  time.Time
}

// SigningKey is a zone's P-256 key. Sealed is the PKCS#8 private key sealed with
// AES-256-GCM under the key-encryption key, with the zone id as associated data
// (see internal/keys). PublicJWK is the public JWK JSON.
type SigningKey struct {
	ZoneID    string
	KID       string
	Sealed    []byte
	PublicJWK []byte
	Status    string // active | retired | revoked
	CreatedAt time.Time
	// ActivatesAt is when the active key starts signing; zero means from CreatedAt. A
	// rotation publishes the next key ahead of it: until then the key is in the JWKS but
	// the previous key (retired at this instant) still signs.
	ActivatesAt time.Time
	// RetiredAt is when the key stops (or stopped) signing; zero while active. A key
	// replaced by a pending rotation is retired with RetiredAt in the future.
	RetiredAt time.Time
	// NotAfter is when a retired key leaves the JWKS: retirement time plus the
	// maximum mandate lifetime; the revocation time for a revoked key. Zero while active.
	NotAfter time.Time
}

// KeyRotation says how RotateSigningKey replaces a zone's signing key.
type KeyRotation struct {
	// Now is the time of the rotation.
	Now time.Time
	// ActivateAt is when the next key starts signing and the current one stops. Now
	// (or earlier) makes the next key sign at once.
	ActivateAt time.Time
	// RetireUntil is when the replaced key leaves the JWKS.
	RetireUntil time.Time
	// Revoke revokes the signing key instead of retiring it: it leaves the JWKS at Now,
	// and so does a next key still waiting for its activation.
	Revoke bool
	// Outbox, when set, is a stream entry written in the same transaction.
	Outbox *OutboxEvent
}

// SigningKeyAt picks, among keys as SigningKeys returns them, the one that signs at now:
// the active key once it is activated, else the key it replaces (the most recently
// retired one still retiring after now). ok is false when there is none.
func SigningKeyAt(keys []SigningKey, now time.Time) (SigningKey, bool) {
	var (
		active, prev SigningKey
		found, has   bool
	)
	for _, k := range keys {
		switch {
		case k.Status == StatusActive:
			active, found = k, true
		case k.Status == StatusRetired && k.RetiredAt.After(now) && (!has || k.RetiredAt.After(prev.RetiredAt)):
			prev, has = k, true
		}
	}
	if !found {
		return SigningKey{}, false
	}
	if !active.ActivatesAt.After(now) || !has {
		return active, true
	}
	return prev, true
}

// PolicyBundle is one version of a zone's Rego modules and data document.
type PolicyBundle struct {
	ZoneID    string
	Version   int64
	Modules   map[string]string
	Data      json.RawMessage
	Active    bool
	CreatedAt time.Time
}

// Session is created when an application authenticates.
type Session struct {
	ZoneID       string
	ID           string // sid
	ClientID     string
	Status       string // active | revoked
	CreatedAt    time.Time
	ExpiresAt    time.Time
	RevokedAt    time.Time // zero unless revoked
	RevokeReason string
}

// Edge is a delegation edge (docs/protocol.md section 4).
type Edge struct {
	ZoneID          string
	ID              string
	SourceSessionID string
	TargetSessionID string
	Resource        string // resource identifier
	Scopes          []string
	ExpiresAt       time.Time
	MaxHops         int
	ParentEdgeID    string // empty for a root edge
	Status          string // active | revoked | expired
	CreatedAt       time.Time
	RevokedAt       time.Time
	// Epoch is the zone epoch after this edge's creation.
	Epoch int64
}

// AdminToken is a Coordinator admin credential. Only the SHA-256 of the token is stored.
// ZoneID is empty for a global token.
type AdminToken struct {
	ID         string
	ZoneID     string
	Capability string // read | write
	Hash       []byte
	CreatedAt  time.Time
	RevokedAt  time.Time
}

// OutboxEvent is a stream entry waiting to be published. Fields are the unsigned
// stream fields of docs/protocol.md section 6; the publisher adds `sig`.
type OutboxEvent struct {
	ZoneID      string
	ID          int64
	Stream      string
	Fields      map[string]string
	CreatedAt   time.Time
	PublishedAt time.Time // zero until published
	Attempts    int
}

// OutboxBacklog describes the unpublished outbox rows.
type OutboxBacklog struct {
	Pending int       // unpublished rows, claimed or not
	Oldest  time.Time // CreatedAt of the oldest; zero when none
	Now     time.Time // the database's clock when counted
}

// RevocationCursor is a position in LiveRevocations' order.
type RevocationCursor struct {
	Edge bool   // false while in the sessions
	ID   string // the last id returned
}

// LiveRevocation is a revoked session (SessionID set) or a revoked delegation edge
// (EdgeID set) whose anchor can still appear in a valid mandate.
type LiveRevocation struct {
	ZoneID    string
	SessionID string
	EdgeID    string
	Reason    string // empty for an edge: edges do not record one
	RevokedAt time.Time
	ExpiresAt time.Time
}

// Cursor is the position after r, to continue LiveRevocations from.
func (r LiveRevocation) Cursor() RevocationCursor {
	if r.EdgeID != "" {
		return RevocationCursor{Edge: true, ID: r.EdgeID}
	}
	return RevocationCursor{ID: r.SessionID}
}

// Fields returns the caracal.sessions.revoke entry that republishes r (without sig).
func (r LiveRevocation) Fields() map[string]string {
	e := revocation.Event{ZoneID: r.ZoneID, Reason: r.Reason, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt}
	if r.EdgeID != "" {
		e.DelegationEdgeID = r.EdgeID
	} else {
		e.SessionID = r.SessionID
	}
	return e.Fields()
}

// AuditEvent records an administrative or security-relevant action.
type AuditEvent struct {
	ZoneID  string
	ID      int64
	At      time.Time
	Actor   string
	Action  string
	Subject string
	Detail  json.RawMessage
}

// EdgeCheck validates a new edge against the live graph inside the creating
// transaction. parent is nil for a root edge; source and target are the edge's sessions.
// Returning an error aborts the creation and is returned unchanged by CreateEdge.
// The check must not call the Store: it runs while the zone is locked (the in-memory
// store holds its mutex, so a call would deadlock).
type EdgeCheck func(parent *Edge, source, target Session) error

// Revocation is the outcome of revoking a session or an edge: what changed, the new zone
// epoch (unchanged if no edge changed) and the outbox rows written in the same transaction.
type Revocation struct {
	Session *Session // the revoked session, for a session revocation
	Edges   []Edge   // edges revoked by this call (the edge itself, descendants, cascades)
	Epoch   int64
}

// Store is the persistence interface. All methods are safe for concurrent use.
type Store interface {
	// CreateZone creates a zone with its first (active) signing key, atomically.
	// ErrConflict if the zone exists.
	CreateZone(ctx context.Context, z Zone, key SigningKey) error
	GetZone(ctx context.Context, zoneID string) (Zone, error)
	ListZones(ctx context.Context) ([]Zone, error)

	// CreateApplication fails with ErrConflict if the client id exists in the zone.
	CreateApplication(ctx context.Context, a Application) error
	// PutApplication creates or replaces (name, secret hash, disabled).
	PutApplication(ctx context.Context, a Application) error
	GetApplication(ctx context.Context, zoneID, clientID string) (Application, error)

	// CreateResource fails with ErrConflict if the identifier exists in the zone.
	CreateResource(ctx context.Context, r Resource) error
	// PutResource creates or replaces (by identifier) the scopes and archived flag.
	PutResource(ctx context.Context, r Resource) error
	GetResource(ctx context.Context, zoneID, identifier string) (Resource, error)
	// ZoneScopes returns the union of the scopes declared by the zone's resources that
	// are not archived, sorted and without duplicates (empty, not nil, when there are
	// none); ErrNotFound if the zone does not exist.
	ZoneScopes(ctx context.Context, zoneID string) ([]string, error)

	// SigningKeys returns the zone's active key and retired keys whose NotAfter is
	// after now, active first.
	SigningKeys(ctx context.Context, zoneID string, now time.Time) ([]SigningKey, error)
	// RotateSigningKey makes next the active key (signing from r.ActivateAt) and retires
	// the key that signs until then (RetiredAt=r.ActivateAt, NotAfter=r.RetireUntil), or
	// revokes it with r.Revoke, atomically, with r.Outbox. ErrConflict when a rotation is
	// still pending (the active key is not activated yet) and r.Revoke is false, or when
	// next's kid exists.
	RotateSigningKey(ctx context.Context, zoneID string, next SigningKey, r KeyRotation) error
	// RevokedSigningKeys returns the zone's keys revoked (by an emergency rotation) at or
	// after since, oldest revocation first: the relay republishes their revocation when
	// the stream has lost its history.
	RevokedSigningKeys(ctx context.Context, zoneID string, since time.Time) ([]SigningKey, error)

	// PutPolicyBundle stores modules and data as the next version and activates it,
	// atomically; it returns the stored bundle. Validation is the caller's job.
	PutPolicyBundle(ctx context.Context, zoneID string, modules map[string]string, data json.RawMessage, now time.Time) (PolicyBundle, error)
	// ActivePolicyBundle returns ErrNotFound when the zone has none.
	ActivePolicyBundle(ctx context.Context, zoneID string) (PolicyBundle, error)

	CreateSession(ctx context.Context, s Session) error
	GetSession(ctx context.Context, zoneID, sid string) (Session, error)
	// Sessions returns the zone's sessions among ids, keyed by id; ids that do not exist
	// (in this zone) are absent from the map. One round trip, for delegation paths.
	Sessions(ctx context.Context, zoneID string, ids []string) (map[string]Session, error)
	// RevokeSession marks the session revoked, revokes every active edge whose source or
	// target is the session together with their descendants, bumps the epoch when an edge
	// changed, and writes the outbox rows (one caracal.sessions.revoke for the session,
	// one per revoked edge, one caracal.delegations.invalidate per revoked edge), all in
	// one transaction. Revoking a revoked session is not an error and changes nothing.
	RevokeSession(ctx context.Context, zoneID, sid, reason string, now time.Time) (Revocation, error)

	// CreateEdge inserts an active edge under the zone lock after check accepted it,
	// sets e.Epoch to the bumped zone epoch and writes a caracal.delegations.invalidate
	// outbox row (event=create). ErrNotFound if the parent or a session is missing.
	CreateEdge(ctx context.Context, e Edge, check EdgeCheck) (Edge, error)
	GetEdge(ctx context.Context, zoneID, edgeID string) (Edge, error)
	// EdgePath returns the path from the root edge to edgeID (root first).
	EdgePath(ctx context.Context, zoneID, edgeID string) ([]Edge, error)
	// RevokeEdge revokes the edge and its active descendants, bumps the epoch, writes the
	// outbox rows. Revoking a revoked edge changes nothing.
	RevokeEdge(ctx context.Context, zoneID, edgeID, reason string, now time.Time) (Revocation, error)
	// ExpireEdges marks active edges with ExpiresAt <= now expired, bumps the epoch if any,
	// writes outbox rows (event=expire) and returns them.
	ExpireEdges(ctx context.Context, zoneID string, now time.Time) ([]Edge, int64, error)
	Epoch(ctx context.Context, zoneID string) (int64, error)

	CreateAdminToken(ctx context.Context, t AdminToken) error
	// AdminTokenByHash returns the token whatever its state: the caller must refuse a
	// token whose RevokedAt is set.
	AdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, error)
	RevokeAdminToken(ctx context.Context, id string, now time.Time) error

	// AppendOutbox writes a stream entry to publish (used for entries not produced by
	// the atomic methods above, e.g. policy invalidation).
	AppendOutbox(ctx context.Context, e OutboxEvent) (OutboxEvent, error)
	// PendingOutbox returns unpublished rows of every zone, oldest first.
	PendingOutbox(ctx context.Context, limit int) ([]OutboxEvent, error)
	// MarkPublished records a successful publication; a failed attempt only bumps Attempts.
	MarkPublished(ctx context.Context, zoneID string, id int64, now time.Time) error
	MarkAttempt(ctx context.Context, zoneID string, id int64) error
	// ClaimOutbox leases the oldest unpublished rows of every zone (up to limit, oldest
	// first) to owner until the database's clock reaches now + lease, so that concurrent
	// relays do not publish the same row. Rows whose lease lapsed (their relay died) and
	// rows already leased to owner are claimable again. The outbox is published by one
	// relay at a time, which keeps every stream in order: while a live lease of another
	// owner covers a pending row, nothing is claimed and the error wraps ErrClaimed.
	ClaimOutbox(ctx context.Context, owner string, limit int, lease time.Duration) ([]OutboxEvent, error)
	// OutboxWatermark returns min(the database's now, CreatedAt of the oldest unpublished
	// row, claimed or not): every row created before it has been published.
	OutboxWatermark(ctx context.Context) (time.Time, error)
	// OutboxBacklog counts the unpublished rows and returns the oldest's CreatedAt, for
	// metrics.
	OutboxBacklog(ctx context.Context) (OutboxBacklog, error)
	// PurgeOutbox deletes up to limit rows published before cutoff and returns how many
	// it deleted. Unpublished rows are never deleted.
	PurgeOutbox(ctx context.Context, cutoff time.Time, limit int) (int, error)

	// LiveRevocations returns, a page at a time, the zone's revoked sessions and revoked
	// edges whose ExpiresAt plus grace is after now: every revocation a mandate could
	// still need. Sessions come first, then edges, each by id; pass the last returned
	// item's cursor to get the next page (the zero cursor starts).
	LiveRevocations(ctx context.Context, zoneID string, now time.Time, grace time.Duration, after RevocationCursor, limit int) ([]LiveRevocation, error)
	// PurgeExpired deletes up to limit of the zone's inactive edges and sessions whose
	// ExpiresAt is before cutoff and returns how many it deleted, edges first. It never
	// deletes an active edge (the expiry sweeper retires it first, with its epoch bump),
	// an edge another edge names as parent, or a session an edge references; those go
	// in a later call once what references them is gone. It runs under the zone lock.
	PurgeExpired(ctx context.Context, zoneID string, cutoff time.Time, limit int) (int, error)

	AppendAudit(ctx context.Context, e AuditEvent) error
	ListAudit(ctx context.Context, zoneID string, limit int) ([]AuditEvent, error)

	Close() error
}
