package control

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/verify"
)

// Admin token capabilities.
const (
	capabilityRead  = "read"
	capabilityWrite = "write"
)

// bootstrapActor is the audit actor of the configured bootstrap token.
const bootstrapActor = "bootstrap"

// Bounds of the verifier caches: zone names come from request paths, so the set of
// per-zone verifiers must not grow without limit, nor each zone's token cache. A full
// set evicts its oldest verifier, which only costs that zone signature checks until its
// cache refills.
const (
	maxVerifierZones = 4096
	maxCachedPerZone = 10_000
)

// caller is an authenticated principal: an admin token or a live session.
type caller struct {
	// id is the audit actor: the admin token id, "bootstrap", or the session's sid.
	id string
	// adminZone is the zone an admin token is scoped to, empty for a global one.
	adminZone string
	write     bool
	// session is the caller's session when it authenticated with a session mandate.
	session *store.Session
}

// looksLikeJWT tells a mandate from an admin token by shape: a compact JWS has exactly
// two dots, admin tokens have none.
func looksLikeJWT(tok string) bool { return strings.Count(tok, ".") == 2 }

// bearer extracts the request's bearer token.
func bearer(r *http.Request) (string, *apiError) {
	tok, err := verify.BearerToken(r)
	if err == nil {
		return tok, nil
	}
	var verr *verify.Error
	if errors.As(err, &verr) && verr.Code != "" {
		return "", &apiError{Status: verr.Status, Code: verr.Code, Description: verr.Description}
	}
	return "", &apiError{Status: http.StatusUnauthorized, Code: codeInvalidToken,
		Description: "a bearer token is required", noToken: true}
}

// requireAdmin authenticates an admin token allowed to act on zoneID ("" for the
// global endpoints) with the capability asked for, and for a zone checks that it
// exists. The zone scope is checked before the zone's existence, so a token of another
// zone learns nothing about which zones exist.
func (s *Service) requireAdmin(r *http.Request, zoneID string, write bool) (*caller, *apiError) {
	tok, aerr := bearer(r)
	if aerr != nil {
		return nil, aerr
	}
	if looksLikeJWT(tok) {
		return nil, invalidToken("an admin token is required; a mandate is not one")
	}
	c, aerr := s.adminCaller(r.Context(), tok)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := c.allow(zoneID, write); aerr != nil {
		return nil, aerr
	}
	if zoneID != "" {
		if aerr := s.zoneExists(r.Context(), zoneID); aerr != nil {
			return nil, aerr
		}
	}
	return c, nil
}

// requireCaller authenticates either a live session of zoneID (by its session mandate)
// or an admin token allowed on the zone with the capability asked for.
func (s *Service) requireCaller(r *http.Request, zoneID string, write bool) (*caller, *apiError) {
	tok, aerr := bearer(r)
	if aerr != nil {
		return nil, aerr
	}
	if looksLikeJWT(tok) {
		return s.sessionCaller(r.Context(), zoneID, tok)
	}
	c, aerr := s.adminCaller(r.Context(), tok)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := c.allow(zoneID, write); aerr != nil {
		return nil, aerr
	}
	if aerr := s.zoneExists(r.Context(), zoneID); aerr != nil {
		return nil, aerr
	}
	return c, nil
}

// allow applies an admin token's zone scope, then its capability.
func (c *caller) allow(zoneID string, write bool) *apiError {
	if c.adminZone != "" && c.adminZone != zoneID {
		return errZoneForbidden
	}
	if write && !c.write {
		return forbidden("this admin token is read-only")
	}
	return nil
}

// adminCaller resolves an admin token: the bootstrap token (compared in constant
// time), or a stored, unrevoked token found by its SHA-256.
func (s *Service) adminCaller(ctx context.Context, tok string) (*caller, *apiError) {
	hash := sha256.Sum256([]byte(tok))
	if s.bootstrap != nil && subtle.ConstantTimeCompare(hash[:], s.bootstrap[:]) == 1 {
		return &caller{id: bootstrapActor, write: true}, nil
	}
	t, err := s.store.AdminTokenByHash(ctx, hash[:])
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, invalidToken("unknown admin token")
	case err != nil:
		return nil, s.storeError(err, "admin token")
	case !t.RevokedAt.IsZero():
		return nil, invalidToken("admin token revoked")
	}
	return &caller{id: t.ID, adminZone: t.ZoneID, write: t.Capability == capabilityWrite}, nil
}

// zoneExists answers 404 for a zone id that is malformed or unknown.
func (s *Service) zoneExists(ctx context.Context, zoneID string) *apiError {
	if !mandate.ValidZoneID(zoneID) {
		return notFound("zone not found")
	}
	if _, err := s.store.GetZone(ctx, zoneID); err != nil {
		return s.storeError(err, "zone")
	}
	return nil
}

// sessionCaller verifies a session mandate of zoneID independently of the STS (same
// keys, same pinned expectation) and requires its session to be live in storage and
// to belong to the mandate's client.
func (s *Service) sessionCaller(ctx context.Context, zoneID, tok string) (*caller, *apiError) {
	if !mandate.ValidZoneID(zoneID) {
		return nil, invalidToken("the mandate is not valid for this zone")
	}
	iss := s.sts.Issuer(zoneID)
	claims, err := s.verifier(zoneID).Verify(ctx, tok, mandate.Expect{Issuer: iss, ZoneID: zoneID, Audience: iss, Use: mandate.UseSession})
	switch {
	case errors.Is(err, mandate.ErrKeysUnavailable):
		s.log.Warn("zone keys unavailable for session mandate verification", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("zone keys are unavailable; retry later")
	case err != nil:
		return nil, invalidToken("session mandate rejected: " + err.Error())
	}
	sess, err := s.store.GetSession(ctx, zoneID, claims.SID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, invalidToken("the mandate's session is unknown")
	case err != nil:
		return nil, s.storeError(err, "session")
	}
	if why := deadSession(sess, s.now()); why != "" {
		return nil, invalidToken("the mandate's " + why)
	}
	if sess.ClientID != claims.ClientID {
		return nil, invalidToken("the mandate's session belongs to another client")
	}
	return &caller{id: sess.ID, session: &sess}, nil
}

// verifier returns the zone's cached mandate verifier over the STS's in-process keys.
func (s *Service) verifier(zoneID string) *mandate.CachedVerifier {
	if v, ok := s.verifiers.Get(zoneID); ok {
		return v
	}
	// One verifier per zone: the lock keeps two first requests from building two.
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.verifiers.Get(zoneID); ok {
		return v
	}
	v := mandate.NewCachedVerifier(&mandate.Verifier{Keys: s.sts.Keys(zoneID), Leeway: s.leeway, Now: s.now}, maxCachedPerZone)
	s.verifiers.Set(zoneID, v)
	return v
}
