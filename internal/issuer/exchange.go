package issuer

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/delegation"
	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// ClientAuth is the client authentication that came with a request, as the transport
// read it (RFC 6749 section 2.3.1).
type ClientAuth struct {
	// ID is the client_id; empty when the request carried no client authentication.
	ID string
	// Secret is the client secret when HasSecret is set. A client_id without a secret
	// only identifies the client (the "none" method): at token exchange and revocation it
	// must then be the subject token's client.
	Secret    string
	HasSecret bool
	// Basic reports that the credentials came in an HTTP Basic header, so that a refusal
	// carries a Basic challenge.
	Basic bool
	// Source is the caller's address, which the failed-authentication lockouts count by.
	Source string
}

// ExchangeRequest is a token exchange (docs/protocol.md section 2.2) as the transport
// parsed it; Exchange checks every part of it.
type ExchangeRequest struct {
	// ZoneID is the zone whose token endpoint was called.
	ZoneID string
	// SubjectToken is the presented session mandate, SubjectTokenType its RFC 8693 type.
	SubjectToken     string
	SubjectTokenType string
	// Resources holds every resource parameter (RFC 8707); exactly one is accepted.
	Resources []string
	// Audience is the RFC 8693 audience parameter (empty when absent). Caracal's targets
	// are resources, so when present it must name the requested resource.
	Audience string
	// Scopes are the requested scopes without duplicates: nil when no scope was requested
	// (all the resource's, or the delegation edge's, scopes), empty when the parameter was
	// sent empty (refused).
	Scopes []string
	// EdgeID is the delegation edge to exchange under; empty for none.
	EdgeID string
	// ActorToken reports that an actor token was sent, which is not supported.
	ActorToken bool
	// Client is the request's client authentication, if any.
	Client ClientAuth
}

// Issued is a mandate the STS issued.
type Issued struct {
	// Token is the signed mandate.
	Token string
	// Expires is the mandate's exp; ExpiresIn its lifetime in seconds from issue.
	Expires   time.Time
	ExpiresIn int64
	// Scope is the granted scopes, space-delimited; empty for a session mandate.
	Scope string
}

// Exchange runs a token exchange: the checks of docs/protocol.md section 2.2 in their
// order (request shape, subject token, resource, scopes, delegation, policy), then
// mints the resource mandate. Every error it returns is an *Error.
func (s *Service) Exchange(ctx context.Context, req ExchangeRequest) (*Issued, error) {
	issued, e := s.exchange(ctx, req)
	if e != nil {
		return nil, e
	}
	return issued, nil
}

func (s *Service) exchange(ctx context.Context, req ExchangeRequest) (*Issued, *Error) {
	if e := checkShape(req); e != nil {
		return nil, e
	}
	zoneID := req.ZoneID
	z, err := s.zone(ctx, zoneID)
	if err != nil {
		return nil, s.zoneFailure(zoneID, err)
	}
	if req.Client.HasSecret {
		if e := s.authenticate(ctx, zoneID, req.Client); e != nil {
			return nil, e
		}
	}
	sub, sess, e := s.subject(ctx, z, zoneID, req)
	if e != nil {
		return nil, e
	}
	res, e := s.targetResource(ctx, z, zoneID, req.Resources[0], req.Audience)
	if e != nil {
		return nil, e
	}
	if e := checkScopes(req.Scopes, res); e != nil {
		return nil, e
	}
	now := s.now()
	requested := req.Scopes
	var deleg *delegated
	if req.EdgeID != "" {
		if deleg, requested, e = s.delegate(ctx, zoneID, req.EdgeID, sess, res, requested, now); e != nil {
			return nil, e
		}
	} else if requested == nil {
		requested = slices.Clone(res.Scopes)
	}
	in := &policy.Input{
		ZoneID:          zoneID,
		Action:          policy.ActionTokenExchange,
		Client:          policy.Client{ID: sub.ClientID},
		Session:         policy.Session{SID: sub.SID, RootSID: sub.RootSID},
		Resource:        policy.Resource{Identifier: res.Identifier, Scopes: res.Scopes},
		RequestedScopes: requested,
		Time:            now.Unix(),
	}
	if deleg != nil {
		in.Delegation = deleg.policyInput()
		in.Session.RootSID = deleg.rootSession().ID
	}
	granted, e := s.decide(ctx, in)
	if e != nil {
		return nil, e
	}
	m := minted{
		clientID: sub.ClientID,
		sid:      sub.SID,
		rootSID:  sub.RootSID,
		resource: res.Identifier,
		scopes:   granted,
		limit:    sess.ExpiresAt,
		now:      now,
	}
	if deleg != nil {
		m.limit = deleg.expires
		m.deleg = deleg
	}
	return s.mint(z, zoneID, m)
}

// checkShape is the request-shape step: required parameters present, one resource, no
// actor token.
func checkShape(req ExchangeRequest) *Error {
	if req.ActorToken {
		return badRequest("actor tokens are not supported")
	}
	if req.SubjectToken == "" {
		return badRequest("subject_token is required")
	}
	switch req.SubjectTokenType {
	case TokenTypeAccessToken:
	case "":
		return badRequest("subject_token_type is required")
	default:
		return badRequest("subject_token_type must be " + TokenTypeAccessToken)
	}
	if len(req.Resources) == 0 || req.Resources[0] == "" {
		return badRequest("resource is required")
	}
	if len(req.Resources) > 1 {
		return invalidTarget("exactly one resource is allowed")
	}
	if req.Scopes != nil && len(req.Scopes) == 0 {
		return badRequest("scope is empty")
	}
	return nil
}

// subject is the subject-token step: the session mandate verifies, belongs to the
// client that authenticated or identified itself, and its session is active.
func (s *Service) subject(ctx context.Context, z *zoneState, zoneID string, req ExchangeRequest) (*mandate.Claims, store.Session, *Error) {
	iss := z.issuer
	sub, err := z.subjects.Verify(ctx, req.SubjectToken, mandate.Expect{Issuer: iss, ZoneID: zoneID, Audience: iss, Use: mandate.UseSession})
	if err != nil {
		return nil, store.Session{}, invalidGrant("subject_token: " + err.Error())
	}
	if e := matchClient(req.Client, sub.ClientID); e != nil {
		return nil, store.Session{}, e
	}
	sess, err := s.session(ctx, zoneID, sub.SID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, store.Session{}, invalidGrant("subject_token: unknown session")
	case err != nil:
		s.log.Warn("session lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, store.Session{}, unavailable("session state could not be read")
	}
	switch {
	case sess.Status != store.StatusActive:
		return nil, store.Session{}, invalidGrant("subject_token: session " + sess.Status)
	case !s.now().Before(sess.ExpiresAt):
		return nil, store.Session{}, invalidGrant("subject_token: session expired")
	case sess.ClientID != sub.ClientID:
		return nil, store.Session{}, invalidGrant("subject_token: session belongs to another client")
	}
	return sub, sess, nil
}

// matchClient checks the request's client against the subject token's. An
// authenticated client that is not the token's is a bad grant; a client that only
// identified itself (no secret) and is not the token's fails client identification
// (RFC 6749 section 5.2, invalid_client).
func matchClient(ca ClientAuth, tokenClient string) *Error {
	switch {
	case ca.ID == "" || ca.ID == tokenClient:
		return nil
	case ca.HasSecret:
		return invalidGrant("subject_token was not issued to the authenticated client")
	}
	e := newError(http.StatusUnauthorized, CodeInvalidClient, "client_id is not the client the token was issued to")
	e.basic = ca.Basic
	return e
}

// targetResource is the resource step: a registered, unarchived resource of the zone. An
// audience, when given, must name that same resource (RFC 8693 section 2.2.2,
// invalid_target).
func (s *Service) targetResource(ctx context.Context, z *zoneState, zoneID, identifier, audience string) (store.Resource, *Error) {
	res, err := s.resource(ctx, z, zoneID, identifier)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Resource{}, invalidTarget("unknown resource")
	case err != nil:
		s.log.Warn("resource lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return store.Resource{}, unavailable("resource could not be read")
	case res.Archived:
		return store.Resource{}, invalidTarget("resource is archived")
	case audience != "" && audience != res.Identifier:
		return store.Resource{}, invalidTarget("audience must name the requested resource")
	}
	return res, nil
}

// checkScopes is the scope step: every requested scope is declared by the resource.
func checkScopes(requested []string, res store.Resource) *Error {
	for _, sc := range requested {
		if !contains(res.Scopes, sc) {
			return invalidScope("scope " + sc + " is not declared by the resource")
		}
	}
	return nil
}

// delegate is the delegation step: the whole path re-validated against the live graph,
// and the requested scopes (all of the leaf edge's when none were requested) within the
// leaf edge's.
func (s *Service) delegate(ctx context.Context, zoneID, edgeID string, sess store.Session, res store.Resource, requested []string, now time.Time) (*delegated, []string, *Error) {
	deleg, e := s.resolveDelegation(ctx, zoneID, edgeID, sess, res.Identifier, now)
	if e != nil {
		return nil, nil, e
	}
	leafScopes := deleg.leaf().Scopes
	if requested == nil {
		return deleg, slices.Clone(leafScopes), nil
	}
	if !delegation.Subset(requested, leafScopes) {
		return nil, nil, invalidScope("requested scopes exceed the delegation edge's scopes")
	}
	return deleg, requested, nil
}

// decide is the policy step: the zone's policy runs on every issue of a resource
// mandate and may narrow the scopes; anything but an allow is access_denied.
func (s *Service) decide(ctx context.Context, in *policy.Input) ([]string, *Error) {
	d := s.policy.Evaluate(ctx, in.ZoneID, in)
	if !d.Allow {
		s.log.Info("denied by policy", zap.String("zone", in.ZoneID), zap.String("action", in.Action), zap.String("client_id", in.Client.ID),
			zap.String("resource", in.Resource.Identifier), zap.String("reason", d.Reason))
		return nil, newError(http.StatusForbidden, CodeAccessDenied, d.Reason)
	}
	if !d.HasScopes {
		return in.RequestedScopes, nil
	}
	granted := intersect(in.RequestedScopes, d.Scopes)
	if len(granted) == 0 {
		return nil, newError(http.StatusForbidden, CodeAccessDenied, "policy granted none of the requested scopes")
	}
	return granted, nil
}

// minted is what a resource mandate is issued for.
type minted struct {
	clientID, sid, rootSID string
	resource               string
	scopes                 []string
	// limit is the latest the mandate may live: the session's or the delegation path's
	// expiry.
	limit time.Time
	deleg *delegated
	now   time.Time
}

// mint signs the resource mandate: the configured lifetime, never beyond m.limit.
func (s *Service) mint(z *zoneState, zoneID string, m minted) (*Issued, *Error) {
	iat := m.now.Truncate(time.Second)
	exp := iat.Add(s.opts.MandateLifetime)
	if m.limit.Before(exp) {
		exp = m.limit
	}
	scope := strings.Join(m.scopes, " ")
	claims := &mandate.Claims{
		Issuer:    z.issuer,
		Subject:   m.clientID,
		Audience:  m.resource,
		Expiry:    exp.Unix(),
		IssuedAt:  iat.Unix(),
		NotBefore: iat.Unix(),
		ID:        store.NewID(""),
		ZoneID:    zoneID,
		ClientID:  m.clientID,
		SID:       m.sid,
		RootSID:   m.rootSID,
		Use:       mandate.UseResource,
		Scope:     scope,
	}
	if d := m.deleg; d != nil {
		root := d.rootSession()
		claims.Subject = root.ClientID
		claims.RootSID = root.ID
		claims.Act = d.actor()
		claims.DelegationEdgeID = d.leaf().ID
		claims.DelegationPath = d.ids()
		claims.HopCount = len(d.path)
		claims.DelegationGraphEpoch = d.epoch
	}
	tok, err := z.sign(mandate.TypResource, claims)
	if err != nil {
		s.log.Error("signing resource mandate failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("mandate could not be signed")
	}
	return &Issued{Token: tok, Expires: time.Unix(exp.Unix(), 0), ExpiresIn: exp.Unix() - iat.Unix(), Scope: scope}, nil
}

func (z *zoneState) sign(typ string, c *mandate.Claims) (string, error) {
	z.mu.RLock()
	signer := z.signer
	z.mu.RUnlock()
	return signer.Sign(typ, c)
}

func (s *Service) zoneFailure(zoneID string, err error) *Error {
	if errors.Is(err, store.ErrNotFound) {
		return newError(http.StatusNotFound, CodeNotFound, "unknown zone")
	}
	s.log.Warn("zone unavailable", zap.String("zone", zoneID), zap.Error(err))
	return unavailable("zone state could not be loaded")
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

// intersect keeps the elements of a that are in b, in a's order.
func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
