// Package memory is an in-process implementation of store.Store for a single Caracal
// process (the demo, tests of other packages). It keeps every record in maps under one
// mutex (sessions in shards of their own, see sessionTable) and copies records in and out, so a caller can never mutate stored state
// through a slice or map it passed in or got back.
//
// Its semantics match the PostgreSQL implementation exactly; the shared contract suite
// in internal/store/storetest runs against both.
package memory

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// Store is the in-memory store. The zero value is not usable; call New.
type Store struct {
	// One mutex for everything: it serialises writers in a zone (the property the
	// PostgreSQL store gets from locking the zone row) and keeps the code obviously
	// correct. The one exception is the creation of sessions (see sessionTable).
	mu     sync.RWMutex
	closed bool

	zones  map[string]*zoneState
	tokens map[string]store.AdminToken // by id
	outbox map[int64]store.OutboxEvent
	claims map[int64]claim    // leases of pending outbox rows
	audit  []store.AuditEvent // in id order

	// Sequences shared by all zones, like the PostgreSQL sequences.
	lastOutboxID int64
	lastAuditID  int64
}

type zoneState struct {
	zone      store.Zone
	apps      map[string]store.Application // by client id
	resources map[string]store.Resource    // by identifier
	keys      map[string]store.SigningKey  // by kid
	bundles   map[int64]store.PolicyBundle // by version
	sessions  *sessionTable                // by sid
	edges     map[string]store.Edge        // by id
}

// New returns an empty store.
func New() *Store {
	return &Store{
		zones:  make(map[string]*zoneState),
		tokens: make(map[string]store.AdminToken),
		outbox: make(map[int64]store.OutboxEvent),
		claims: make(map[int64]claim),
	}
}

// lock takes the store mutex; it fails once the store is closed, as a closed
// connection pool would.
func (s *Store) lock() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("memory store closed: %w", store.ErrUnavailable)
	}
	return nil
}

// rlock is lock for methods that only read.
func (s *Store) rlock() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("memory store closed: %w", store.ErrUnavailable)
	}
	return nil
}

func (s *Store) zone(zoneID string) (*zoneState, error) {
	z, ok := s.zones[zoneID]
	if !ok {
		return nil, fmt.Errorf("zone %q: %w", zoneID, store.ErrNotFound)
	}
	return z, nil
}

// CreateZone creates a zone with its first active signing key.
func (s *Store) CreateZone(_ context.Context, z store.Zone, key store.SigningKey) error {
	if key.ZoneID != "" && key.ZoneID != z.ID {
		return fmt.Errorf("creating zone %q: signing key belongs to zone %q", z.ID, key.ZoneID)
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, ok := s.zones[z.ID]; ok {
		return fmt.Errorf("creating zone %q: %w", z.ID, store.ErrConflict)
	}
	z.Epoch = 0
	z.CreatedAt = orNow(z.CreatedAt)
	st := &zoneState{
		zone:      z,
		apps:      make(map[string]store.Application),
		resources: make(map[string]store.Resource),
		keys:      make(map[string]store.SigningKey),
		bundles:   make(map[int64]store.PolicyBundle),
		sessions:  newSessionTable(),
		edges:     make(map[string]store.Edge),
	}
	st.keys[key.KID] = newActiveKey(z.ID, key)
	s.zones[z.ID] = st
	return nil
}

// GetZone returns a zone.
func (s *Store) GetZone(_ context.Context, zoneID string) (store.Zone, error) {
	if err := s.rlock(); err != nil {
		return store.Zone{}, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.Zone{}, err
	}
	return z.zone, nil
}

// ListZones returns every zone ordered by id.
func (s *Store) ListZones(_ context.Context) ([]store.Zone, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	out := make([]store.Zone, 0, len(s.zones))
	for _, z := range s.zones {
		out = append(out, z.zone)
	}
	slices.SortFunc(out, func(a, b store.Zone) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// CreateApplication registers an application; ErrConflict if the client id exists.
func (s *Store) CreateApplication(_ context.Context, a store.Application) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	z, err := s.zone(a.ZoneID)
	if err != nil {
		return err
	}
	if _, ok := z.apps[a.ClientID]; ok {
		return fmt.Errorf("application %q: %w", a.ClientID, store.ErrConflict)
	}
	a.CreatedAt = orNow(a.CreatedAt)
	z.apps[a.ClientID] = a
	return nil
}

// PutApplication creates an application or replaces its name, secret hash and
// disabled flag.
func (s *Store) PutApplication(_ context.Context, a store.Application) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	z, err := s.zone(a.ZoneID)
	if err != nil {
		return err
	}
	if old, ok := z.apps[a.ClientID]; ok {
		a.CreatedAt = old.CreatedAt
	} else {
		a.CreatedAt = orNow(a.CreatedAt)
	}
	z.apps[a.ClientID] = a
	return nil
}

// GetApplication returns an application of the zone.
func (s *Store) GetApplication(_ context.Context, zoneID, clientID string) (store.Application, error) {
	if err := s.rlock(); err != nil {
		return store.Application{}, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.Application{}, err
	}
	a, ok := z.apps[clientID]
	if !ok {
		return store.Application{}, fmt.Errorf("application %q: %w", clientID, store.ErrNotFound)
	}
	return a, nil
}

// CreateResource registers a resource; ErrConflict if its id or identifier exists.
func (s *Store) CreateResource(_ context.Context, r store.Resource) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	z, err := s.zone(r.ZoneID)
	if err != nil {
		return err
	}
	if _, ok := z.resources[r.Identifier]; ok {
		return fmt.Errorf("resource %q: %w", r.Identifier, store.ErrConflict)
	}
	return z.insertResource(r)
}

// PutResource creates a resource or replaces the scopes and archived flag of the
// resource with the same identifier.
func (s *Store) PutResource(_ context.Context, r store.Resource) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	z, err := s.zone(r.ZoneID)
	if err != nil {
		return err
	}
	if old, ok := z.resources[r.Identifier]; ok {
		old.Scopes = cloneStrings(r.Scopes)
		old.Archived = r.Archived
		z.resources[r.Identifier] = old
		return nil
	}
	return z.insertResource(r)
}

func (z *zoneState) insertResource(r store.Resource) error {
	for _, other := range z.resources {
		if other.ID == r.ID {
			return fmt.Errorf("resource id %q: %w", r.ID, store.ErrConflict)
		}
	}
	r.Scopes = cloneStrings(r.Scopes)
	r.CreatedAt = orNow(r.CreatedAt)
	z.resources[r.Identifier] = r
	return nil
}

// GetResource returns the zone's resource with the given identifier.
func (s *Store) GetResource(_ context.Context, zoneID, identifier string) (store.Resource, error) {
	if err := s.rlock(); err != nil {
		return store.Resource{}, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.Resource{}, err
	}
	r, ok := z.resources[identifier]
	if !ok {
		return store.Resource{}, fmt.Errorf("resource %q: %w", identifier, store.ErrNotFound)
	}
	r.Scopes = cloneStrings(r.Scopes)
	return r, nil
}

// ZoneScopes returns the sorted union of the scopes of the zone's unarchived resources.
func (s *Store) ZoneScopes(_ context.Context, zoneID string) ([]string, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool)
	out := []string{}
	for _, r := range z.resources {
		if r.Archived {
			continue
		}
		for _, sc := range r.Scopes {
			if !seen[sc] {
				seen[sc] = true
				out = append(out, sc)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// SigningKeys returns the active key, then retired keys whose NotAfter is after now,
// most recently retired first.
func (s *Store) SigningKeys(_ context.Context, zoneID string, now time.Time) ([]store.SigningKey, error) {
	now = ts(now)
	return s.keysWhere(zoneID, func(k store.SigningKey) bool {
		return k.Status == store.StatusActive || k.NotAfter.After(now)
	}, compareKeys)
}

// RevokedSigningKeys returns the zone's keys revoked at or after since, oldest first.
func (s *Store) RevokedSigningKeys(_ context.Context, zoneID string, since time.Time) ([]store.SigningKey, error) {
	since = ts(since)
	return s.keysWhere(zoneID, func(k store.SigningKey) bool {
		return k.Status == store.StatusRevoked && !k.RetiredAt.Before(since)
	}, func(a, b store.SigningKey) int {
		if c := a.RetiredAt.Compare(b.RetiredAt); c != 0 {
			return c
		}
		return strings.Compare(a.KID, b.KID)
	})
}

// keysWhere returns copies of the zone's keys that keep accepts, sorted by order.
func (s *Store) keysWhere(zoneID string, keep func(store.SigningKey) bool, order func(a, b store.SigningKey) int) ([]store.SigningKey, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return nil, err
	}
	var out []store.SigningKey
	for _, k := range z.keys {
		if keep(k) {
			out = append(out, cloneKey(k))
		}
	}
	slices.SortFunc(out, order)
	return out, nil
}

// compareKeys orders the active key first, then retired keys by retirement time,
// newest first, then by kid.
func compareKeys(a, b store.SigningKey) int {
	if a.Status != b.Status {
		if a.Status == store.StatusActive {
			return -1
		}
		return 1
	}
	if c := b.RetiredAt.Compare(a.RetiredAt); c != 0 {
		return c
	}
	return cmp.Compare(a.KID, b.KID)
}

// RotateSigningKey makes next the active key and retires or revokes the key it replaces.
func (s *Store) RotateSigningKey(_ context.Context, zoneID string, next store.SigningKey, r store.KeyRotation) error {
	if next.ZoneID != "" && next.ZoneID != zoneID {
		return fmt.Errorf("rotating signing key of zone %q: key belongs to zone %q", zoneID, next.ZoneID)
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return err
	}
	if _, ok := z.keys[next.KID]; ok {
		return fmt.Errorf("signing key %q: %w", next.KID, store.ErrConflict)
	}
	now := ts(r.Now)
	all := make([]store.SigningKey, 0, len(z.keys))
	for _, k := range z.keys {
		if k.Status == store.StatusActive || k.NotAfter.After(now) {
			all = append(all, k)
		}
	}
	signing, _ := store.SigningKeyAt(all, now)
	for kid, k := range z.keys {
		// A pending rotation: only an emergency one may replace it.
		if k.Status == store.StatusActive && k.ActivatesAt.After(now) && !r.Revoke {
			return fmt.Errorf("signing key %q activates at %s: %w", kid, k.ActivatesAt.Format(time.RFC3339), store.ErrConflict)
		}
	}
	retireAt := now
	if r.ActivateAt.After(now) {
		retireAt = ts(r.ActivateAt)
	}
	for kid, k := range z.keys {
		switch {
		case k.Status == store.StatusActive && k.ActivatesAt.After(now):
			k.Status, k.RetiredAt, k.NotAfter = store.StatusRevoked, now, now
		case kid == signing.KID && r.Revoke:
			k.Status, k.RetiredAt, k.NotAfter = store.StatusRevoked, now, now
		case k.Status == store.StatusActive:
			k.Status, k.RetiredAt, k.NotAfter = store.StatusRetired, retireAt, ts(r.RetireUntil)
		default:
			continue
		}
		z.keys[kid] = k
	}
	k := newActiveKey(zoneID, next)
	if retireAt.After(now) {
		k.ActivatesAt = retireAt
	}
	z.keys[next.KID] = k
	if r.Outbox != nil {
		s.appendOutbox(zoneID, r.Outbox.Stream, r.Outbox.Fields, now)
	}
	return nil
}

func newActiveKey(zoneID string, k store.SigningKey) store.SigningKey {
	k = cloneKey(k)
	k.ZoneID = zoneID
	k.Status = store.StatusActive
	k.CreatedAt = orNow(k.CreatedAt)
	k.ActivatesAt = time.Time{}
	k.RetiredAt = time.Time{}
	k.NotAfter = time.Time{}
	return k
}

// PutPolicyBundle stores the next bundle version and makes it the active one.
func (s *Store) PutPolicyBundle(_ context.Context, zoneID string, modules map[string]string, data json.RawMessage, now time.Time) (store.PolicyBundle, error) {
	if data != nil && !json.Valid(data) {
		return store.PolicyBundle{}, fmt.Errorf("storing policy bundle of zone %q: data is not valid JSON", zoneID)
	}
	if err := s.lock(); err != nil {
		return store.PolicyBundle{}, err
	}
	defer s.mu.Unlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.PolicyBundle{}, err
	}
	var version int64
	for v, b := range z.bundles {
		version = max(version, v)
		b.Active = false
		z.bundles[v] = b
	}
	b := store.PolicyBundle{
		ZoneID:    zoneID,
		Version:   version + 1,
		Modules:   cloneFields(modules),
		Data:      cloneRaw(data),
		Active:    true,
		CreatedAt: ts(now),
	}
	z.bundles[b.Version] = b
	return cloneBundle(b), nil
}

// ActivePolicyBundle returns the zone's active bundle.
func (s *Store) ActivePolicyBundle(_ context.Context, zoneID string) (store.PolicyBundle, error) {
	if err := s.rlock(); err != nil {
		return store.PolicyBundle{}, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.PolicyBundle{}, err
	}
	for _, b := range z.bundles {
		if b.Active {
			return cloneBundle(b), nil
		}
	}
	return store.PolicyBundle{}, fmt.Errorf("active policy bundle of zone %q: %w", zoneID, store.ErrNotFound)
}

// CreateSession stores an active session of a registered application.
func (s *Store) CreateSession(_ context.Context, sess store.Session) error {
	// Shared: what is read here changes only under the exclusive lock, and the
	// session's shard has a lock of its own (see sessionTable).
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(sess.ZoneID)
	if err != nil {
		return err
	}
	// insert below checks the sid again, atomically; this check keeps the conflict
	// ahead of a missing application, as in PostgreSQL.
	if _, ok := z.sessions.get(sess.ID); ok {
		return fmt.Errorf("session %q: %w", sess.ID, store.ErrConflict)
	}
	if _, ok := z.apps[sess.ClientID]; !ok {
		return fmt.Errorf("application %q of session %q: %w", sess.ClientID, sess.ID, store.ErrNotFound)
	}
	sess.Status = store.StatusActive
	sess.CreatedAt = orNow(sess.CreatedAt)
	sess.ExpiresAt = ts(sess.ExpiresAt)
	sess.RevokedAt = time.Time{}
	sess.RevokeReason = ""
	if !z.sessions.insert(sess) {
		return fmt.Errorf("session %q: %w", sess.ID, store.ErrConflict)
	}
	return nil
}

// GetSession returns a session of the zone.
func (s *Store) GetSession(_ context.Context, zoneID, sid string) (store.Session, error) {
	if err := s.rlock(); err != nil {
		return store.Session{}, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.Session{}, err
	}
	return z.session(sid)
}

// Sessions returns the zone's sessions among ids.
func (s *Store) Sessions(_ context.Context, zoneID string, ids []string) (map[string]store.Session, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if errors.Is(err, store.ErrNotFound) {
		return map[string]store.Session{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.Session, len(ids))
	for _, id := range ids {
		if sess, ok := z.sessions.get(id); ok {
			out[id] = sess
		}
	}
	return out, nil
}

func (z *zoneState) session(sid string) (store.Session, error) {
	sess, ok := z.sessions.get(sid)
	if !ok {
		return store.Session{}, fmt.Errorf("session %q: %w", sid, store.ErrNotFound)
	}
	return sess, nil
}

// RevokeSession revokes the session, every edge it is the source or target of and
// their descendants, in one step.
func (s *Store) RevokeSession(_ context.Context, zoneID, sid, reason string, now time.Time) (store.Revocation, error) {
	if err := s.lock(); err != nil {
		return store.Revocation{}, err
	}
	defer s.mu.Unlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.Revocation{}, err
	}
	sess, err := z.session(sid)
	if err != nil {
		return store.Revocation{}, err
	}
	if sess.Status == store.StatusRevoked {
		return store.Revocation{Session: &sess, Epoch: z.zone.Epoch}, nil
	}
	now = ts(now)
	sess.Status = store.StatusRevoked
	sess.RevokedAt = now
	sess.RevokeReason = reason
	z.sessions.put(sess)
	s.appendOutbox(zoneID, revocation.StreamSessionsRevoke, revocation.Event{ZoneID: zoneID, SessionID: sess.ID, Reason: reason, RevokedAt: now, ExpiresAt: sess.ExpiresAt}.Fields(), now)

	var roots []string
	for id, e := range z.edges {
		if e.SourceSessionID == sid || e.TargetSessionID == sid {
			roots = append(roots, id)
		}
	}
	edges := s.revokeEdges(z, roots, reason, now)
	out := sess
	return store.Revocation{Session: &out, Edges: edges, Epoch: z.zone.Epoch}, nil
}

// revokeEdges revokes the active edges among roots and their descendants, bumps the
// epoch once if any changed and writes their outbox rows. The walk goes through edges
// of every status so an active edge below an inactive one is still reached.
func (s *Store) revokeEdges(z *zoneState, roots []string, reason string, now time.Time) []store.Edge {
	children := make(map[string][]string)
	for id, e := range z.edges {
		if e.ParentEdgeID != "" {
			children[e.ParentEdgeID] = append(children[e.ParentEdgeID], id)
		}
	}
	seen := make(map[string]bool)
	queue := slices.Clone(roots)
	var hit []store.Edge
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		if e := z.edges[id]; e.Status == store.StatusActive {
			hit = append(hit, e)
		}
		queue = append(queue, children[id]...)
	}
	if len(hit) == 0 {
		return nil
	}
	z.zone.Epoch++
	sortEdges(hit)
	out := make([]store.Edge, len(hit))
	for i, e := range hit {
		e.Status = store.StatusRevoked
		e.RevokedAt = now
		z.edges[e.ID] = e
		s.appendOutbox(z.zone.ID, revocation.StreamSessionsRevoke, revocation.Event{ZoneID: z.zone.ID, DelegationEdgeID: e.ID, Reason: reason, RevokedAt: now, ExpiresAt: e.ExpiresAt}.Fields(), now)
		s.appendOutbox(z.zone.ID, revocation.StreamDelegationInvalidate, revocation.EpochEvent{ZoneID: z.zone.ID, Epoch: z.zone.Epoch, EdgeID: e.ID, Event: revocation.EpochRevoke}.Fields(), now)
		out[i] = cloneEdge(e)
	}
	return out
}

// CreateEdge inserts an active edge after check accepted it, bumping the epoch.
func (s *Store) CreateEdge(_ context.Context, e store.Edge, check store.EdgeCheck) (store.Edge, error) {
	if err := s.lock(); err != nil {
		return store.Edge{}, err
	}
	defer s.mu.Unlock()
	z, err := s.zone(e.ZoneID)
	if err != nil {
		return store.Edge{}, err
	}
	source, err := z.session(e.SourceSessionID)
	if err != nil {
		return store.Edge{}, fmt.Errorf("source of edge %q: %w", e.ID, err)
	}
	target, err := z.session(e.TargetSessionID)
	if err != nil {
		return store.Edge{}, fmt.Errorf("target of edge %q: %w", e.ID, err)
	}
	var parent *store.Edge
	if e.ParentEdgeID != "" {
		p, ok := z.edges[e.ParentEdgeID]
		if !ok {
			return store.Edge{}, fmt.Errorf("parent edge %q: %w", e.ParentEdgeID, store.ErrNotFound)
		}
		p = cloneEdge(p)
		parent = &p
	}
	if _, ok := z.resources[e.Resource]; !ok {
		return store.Edge{}, fmt.Errorf("resource %q of edge %q: %w", e.Resource, e.ID, store.ErrNotFound)
	}
	if check != nil {
		if err := check(parent, source, target); err != nil {
			return store.Edge{}, err
		}
	}
	if _, ok := z.edges[e.ID]; ok {
		return store.Edge{}, fmt.Errorf("edge %q: %w", e.ID, store.ErrConflict)
	}
	e = cloneEdge(e)
	e.Status = store.StatusActive
	e.CreatedAt = orNow(e.CreatedAt)
	e.ExpiresAt = ts(e.ExpiresAt)
	e.RevokedAt = time.Time{}
	z.zone.Epoch++
	e.Epoch = z.zone.Epoch
	z.edges[e.ID] = e
	s.appendOutbox(e.ZoneID, revocation.StreamDelegationInvalidate, revocation.EpochEvent{ZoneID: e.ZoneID, Epoch: e.Epoch, EdgeID: e.ID, Event: revocation.EpochCreate}.Fields(), e.CreatedAt)
	return cloneEdge(e), nil
}

// GetEdge returns an edge of the zone.
func (s *Store) GetEdge(_ context.Context, zoneID, edgeID string) (store.Edge, error) {
	if err := s.rlock(); err != nil {
		return store.Edge{}, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.Edge{}, err
	}
	e, ok := z.edges[edgeID]
	if !ok {
		return store.Edge{}, fmt.Errorf("edge %q: %w", edgeID, store.ErrNotFound)
	}
	return cloneEdge(e), nil
}

// EdgePath returns the edges from the root of edgeID's chain down to edgeID.
func (s *Store) EdgePath(_ context.Context, zoneID, edgeID string) ([]store.Edge, error) {
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return nil, err
	}
	var path []store.Edge
	for id := edgeID; id != ""; {
		e, ok := z.edges[id]
		if !ok {
			return nil, fmt.Errorf("edge %q: %w", id, store.ErrNotFound)
		}
		path = append(path, cloneEdge(e))
		id = e.ParentEdgeID
	}
	slices.Reverse(path)
	return path, nil
}

// RevokeEdge revokes an active edge and its active descendants.
func (s *Store) RevokeEdge(_ context.Context, zoneID, edgeID, reason string, now time.Time) (store.Revocation, error) {
	if err := s.lock(); err != nil {
		return store.Revocation{}, err
	}
	defer s.mu.Unlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return store.Revocation{}, err
	}
	e, ok := z.edges[edgeID]
	if !ok {
		return store.Revocation{}, fmt.Errorf("edge %q: %w", edgeID, store.ErrNotFound)
	}
	if e.Status != store.StatusActive {
		return store.Revocation{Epoch: z.zone.Epoch}, nil
	}
	edges := s.revokeEdges(z, []string{edgeID}, reason, ts(now))
	return store.Revocation{Edges: edges, Epoch: z.zone.Epoch}, nil
}

// ExpireEdges marks active edges whose expiry has passed as expired.
func (s *Store) ExpireEdges(_ context.Context, zoneID string, now time.Time) ([]store.Edge, int64, error) {
	if err := s.lock(); err != nil {
		return nil, 0, err
	}
	defer s.mu.Unlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return nil, 0, err
	}
	now = ts(now)
	var hit []store.Edge
	for _, e := range z.edges {
		if e.Status == store.StatusActive && !e.ExpiresAt.After(now) {
			hit = append(hit, e)
		}
	}
	if len(hit) == 0 {
		return nil, z.zone.Epoch, nil
	}
	z.zone.Epoch++
	sortEdges(hit)
	out := make([]store.Edge, len(hit))
	for i, e := range hit {
		e.Status = store.StatusExpired
		z.edges[e.ID] = e
		s.appendOutbox(zoneID, revocation.StreamDelegationInvalidate, revocation.EpochEvent{ZoneID: zoneID, Epoch: z.zone.Epoch, EdgeID: e.ID, Event: revocation.EpochExpire}.Fields(), now)
		out[i] = cloneEdge(e)
	}
	return out, z.zone.Epoch, nil
}

// Epoch returns the zone's delegation graph epoch.
func (s *Store) Epoch(_ context.Context, zoneID string) (int64, error) {
	if err := s.rlock(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	z, err := s.zone(zoneID)
	if err != nil {
		return 0, err
	}
	return z.zone.Epoch, nil
}

// CreateAdminToken stores a token; ErrConflict if its id or hash exists.
func (s *Store) CreateAdminToken(_ context.Context, t store.AdminToken) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if _, ok := s.tokens[t.ID]; ok {
		return fmt.Errorf("admin token %q: %w", t.ID, store.ErrConflict)
	}
	for _, other := range s.tokens {
		if string(other.Hash) == string(t.Hash) {
			return fmt.Errorf("admin token hash: %w", store.ErrConflict)
		}
	}
	if t.ZoneID != "" {
		if _, err := s.zone(t.ZoneID); err != nil {
			return fmt.Errorf("admin token %q: %w", t.ID, err)
		}
	}
	t.Hash = cloneBytes(t.Hash)
	t.CreatedAt = orNow(t.CreatedAt)
	t.RevokedAt = time.Time{}
	s.tokens[t.ID] = t
	return nil
}

// AdminTokenByHash returns the token with the given hash, revoked or not.
func (s *Store) AdminTokenByHash(_ context.Context, hash []byte) (store.AdminToken, error) {
	if err := s.rlock(); err != nil {
		return store.AdminToken{}, err
	}
	defer s.mu.RUnlock()
	for _, t := range s.tokens {
		if string(t.Hash) == string(hash) {
			t.Hash = cloneBytes(t.Hash)
			return t, nil
		}
	}
	return store.AdminToken{}, fmt.Errorf("admin token: %w", store.ErrNotFound)
}

// RevokeAdminToken revokes a token; revoking a revoked token keeps its first
// revocation time.
func (s *Store) RevokeAdminToken(_ context.Context, id string, now time.Time) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	t, ok := s.tokens[id]
	if !ok {
		return fmt.Errorf("admin token %q: %w", id, store.ErrNotFound)
	}
	if t.RevokedAt.IsZero() {
		t.RevokedAt = ts(now)
		s.tokens[id] = t
	}
	return nil
}

// AppendOutbox stores a stream entry to publish and returns it with its id.
func (s *Store) AppendOutbox(_ context.Context, e store.OutboxEvent) (store.OutboxEvent, error) {
	if err := s.lock(); err != nil {
		return store.OutboxEvent{}, err
	}
	defer s.mu.Unlock()
	if _, err := s.zone(e.ZoneID); err != nil {
		return store.OutboxEvent{}, fmt.Errorf("outbox entry: %w", err)
	}
	return s.appendOutbox(e.ZoneID, e.Stream, e.Fields, orNow(e.CreatedAt)), nil
}

func (s *Store) appendOutbox(zoneID, stream string, fields map[string]string, at time.Time) store.OutboxEvent {
	s.lastOutboxID++
	e := store.OutboxEvent{
		ZoneID:    zoneID,
		ID:        s.lastOutboxID,
		Stream:    stream,
		Fields:    cloneFields(fields),
		CreatedAt: at,
	}
	s.outbox[e.ID] = e
	return cloneOutbox(e)
}

// PendingOutbox returns up to limit unpublished entries of every zone, oldest first.
func (s *Store) PendingOutbox(_ context.Context, limit int) ([]store.OutboxEvent, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pending outbox: limit %d is not positive", limit)
	}
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	out := s.pendingLocked()
	out = out[:min(limit, len(out))]
	for i := range out {
		out[i] = cloneOutbox(out[i])
	}
	return out, nil
}

// MarkPublished records the publication of an entry; the first publication time wins.
func (s *Store) MarkPublished(_ context.Context, zoneID string, id int64, now time.Time) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, err := s.outboxEntry(zoneID, id)
	if err != nil {
		return err
	}
	if e.PublishedAt.IsZero() {
		e.PublishedAt = ts(now)
		s.outbox[id] = e
		delete(s.claims, id)
	}
	return nil
}

// MarkAttempt counts a failed publication attempt.
func (s *Store) MarkAttempt(_ context.Context, zoneID string, id int64) error {
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	e, err := s.outboxEntry(zoneID, id)
	if err != nil {
		return err
	}
	e.Attempts++
	s.outbox[id] = e
	return nil
}

func (s *Store) outboxEntry(zoneID string, id int64) (store.OutboxEvent, error) {
	e, ok := s.outbox[id]
	if !ok || e.ZoneID != zoneID {
		return store.OutboxEvent{}, fmt.Errorf("outbox entry %d of zone %q: %w", id, zoneID, store.ErrNotFound)
	}
	return e, nil
}

// AppendAudit records an audit event. The zone need not exist: global actions use an
// empty zone id.
func (s *Store) AppendAudit(_ context.Context, e store.AuditEvent) error {
	if e.Detail != nil && !json.Valid(e.Detail) {
		return fmt.Errorf("audit event %q: detail is not valid JSON", e.Action)
	}
	if err := s.lock(); err != nil {
		return err
	}
	defer s.mu.Unlock()
	s.lastAuditID++
	e.ID = s.lastAuditID
	e.At = orNow(e.At)
	e.Detail = cloneRaw(e.Detail)
	s.audit = append(s.audit, e)
	return nil
}

// ListAudit returns up to limit audit events of the zone, newest first.
func (s *Store) ListAudit(_ context.Context, zoneID string, limit int) ([]store.AuditEvent, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("listing audit events: limit %d is not positive", limit)
	}
	if err := s.rlock(); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	var out []store.AuditEvent
	for i := len(s.audit) - 1; i >= 0 && len(out) < limit; i-- {
		if e := s.audit[i]; e.ZoneID == zoneID {
			e.Detail = cloneRaw(e.Detail)
			out = append(out, e)
		}
	}
	return out, nil
}

// Close makes every later call fail with store.ErrUnavailable.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
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

// ts normalises a time the way PostgreSQL's timestamptz stores it: UTC, microseconds.
func ts(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return ts(time.Now())
	}
	return ts(t)
}

func cloneStrings(s []string) []string {
	return append([]string{}, s...)
}

func cloneBytes(b []byte) []byte {
	return append([]byte{}, b...)
}

// cloneRaw keeps nil as nil: a missing JSON document is not an empty one.
func cloneRaw(r json.RawMessage) json.RawMessage {
	if r == nil {
		return nil
	}
	return append(json.RawMessage{}, r...)
}

func cloneFields(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	maps.Copy(out, m)
	return out
}

func cloneKey(k store.SigningKey) store.SigningKey {
	k.Sealed = cloneBytes(k.Sealed)
	k.PublicJWK = cloneBytes(k.PublicJWK)
	return k
}

func cloneBundle(b store.PolicyBundle) store.PolicyBundle {
	b.Modules = cloneFields(b.Modules)
	b.Data = cloneRaw(b.Data)
	return b
}

func cloneEdge(e store.Edge) store.Edge {
	e.Scopes = cloneStrings(e.Scopes)
	return e
}

func cloneOutbox(e store.OutboxEvent) store.OutboxEvent {
	e.Fields = cloneFields(e.Fields)
	return e
}
