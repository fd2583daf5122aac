package issuer

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// tokenResponse is the success body of both grants (RFC 6749 5.1, RFC 8693 2.2.1).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// clientAuth is the client authentication found in a request, if any.
type clientAuth struct {
	present bool
	basic   bool
	id      string
	secret  string
}

func (s *Service) serveToken(w http.ResponseWriter, r *http.Request) {
	zoneID, ok := zoneParam(w, r)
	if !ok {
		return
	}
	f, oerr := readForm(r)
	if oerr != nil {
		writeError(w, s.Issuer(zoneID), oerr)
		return
	}
	var resp *tokenResponse
	switch gt := f.get("grant_type"); gt {
	case "":
		oerr = badRequest("grant_type is required")
	case GrantClientCreds:
		resp, oerr = s.clientCredentials(r.Context(), zoneID, r, f)
	case GrantTokenExchange:
		resp, oerr = s.exchange(r.Context(), zoneID, r, f)
	default:
		oerr = newError(http.StatusBadRequest, codeUnsupportedGrantType, "grant_type must be client_credentials or token-exchange")
	}
	if oerr != nil {
		s.log.Debug("token request refused", zap.String("zone", zoneID), zap.String("error", oerr.Code), zap.String("reason", oerr.Description))
		writeError(w, s.Issuer(zoneID), oerr)
		return
	}
	noStore(w)
	writeJSON(w, http.StatusOK, resp)
}

// readClientAuth takes client credentials from HTTP Basic (RFC 6749 2.3.1, form-encoded
// parts) or from the client_id and client_secret parameters, never both.
func readClientAuth(r *http.Request, f *form) (clientAuth, *oauthError) {
	hdr := r.Header.Get("Authorization")
	inForm := f.has("client_id") || f.has("client_secret")
	if hdr != "" {
		if inForm {
			return clientAuth{}, badRequest("use either HTTP Basic or client_id and client_secret parameters, not both")
		}
		id, sec, ok := r.BasicAuth()
		if !ok {
			return clientAuth{}, badRequest("the Authorization header must use the Basic scheme")
		}
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		sec, err2 = url.QueryUnescape(sec)
		if err1 != nil || err2 != nil || id == "" {
			return clientAuth{}, badRequest("malformed Basic credentials")
		}
		return clientAuth{present: true, basic: true, id: id, secret: sec}, nil
	}
	if !inForm {
		return clientAuth{}, nil
	}
	if f.get("client_id") == "" || !f.has("client_secret") {
		return clientAuth{}, badRequest("client_id and client_secret are both required")
	}
	return clientAuth{present: true, id: f.get("client_id"), secret: f.get("client_secret")}, nil
}

// clientCredentials issues a session mandate (docs/protocol.md section 2.1).
func (s *Service) clientCredentials(ctx context.Context, zoneID string, r *http.Request, f *form) (*tokenResponse, *oauthError) {
	ca, oerr := readClientAuth(r, f)
	if oerr != nil {
		return nil, oerr
	}
	if !ca.present {
		e := newError(http.StatusUnauthorized, codeInvalidClient, "client authentication is required")
		e.basic = true
		return nil, e
	}
	z, err := s.zone(ctx, zoneID)
	if err != nil {
		return nil, s.zoneFailure(zoneID, err)
	}
	if oerr := s.authenticate(ctx, zoneID, r, ca); oerr != nil {
		return nil, oerr
	}
	now := s.now().Truncate(time.Second)
	sess := store.Session{
		ZoneID:    zoneID,
		ID:        randomID(),
		ClientID:  ca.id,
		Status:    store.StatusActive,
		CreatedAt: now,
		ExpiresAt: now.Add(s.opts.SessionLifetime),
	}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		s.log.Warn("storing session failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("session could not be stored")
	}
	claims := &mandate.Claims{
		Issuer:    z.issuer,
		Subject:   ca.id,
		Audience:  z.issuer,
		Expiry:    sess.ExpiresAt.Unix(),
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		ID:        randomID(),
		ZoneID:    zoneID,
		ClientID:  ca.id,
		SID:       sess.ID,
		RootSID:   sess.ID,
		Use:       mandate.UseSession,
	}
	tok, err := z.sign(mandate.TypSession, claims)
	if err != nil {
		s.log.Error("signing session mandate failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("mandate could not be signed")
	}
	s.log.Info("session issued", zap.String("zone", zoneID), zap.String("client_id", ca.id), zap.String("sid", sess.ID))
	return &tokenResponse{
		AccessToken:     tok,
		IssuedTokenType: TokenTypeAccessToken,
		TokenType:       "Bearer",
		ExpiresIn:       int64(s.opts.SessionLifetime / time.Second),
	}, nil
}

func (z *zoneState) sign(typ string, c *mandate.Claims) (string, error) {
	z.mu.RLock()
	signer := z.signer
	z.mu.RUnlock()
	return signer.Sign(typ, c)
}

func (s *Service) zoneFailure(zoneID string, err error) *oauthError {
	if errors.Is(err, store.ErrNotFound) {
		return newError(http.StatusNotFound, codeNotFound, "unknown zone")
	}
	s.log.Warn("zone unavailable", zap.String("zone", zoneID), zap.Error(err))
	return unavailable("zone state could not be loaded")
}

// exchange implements docs/protocol.md section 2.2 in its order: request shape, subject token, resource,
// scopes, delegation, then policy.
func (s *Service) exchange(ctx context.Context, zoneID string, r *http.Request, f *form) (*tokenResponse, *oauthError) {
	// Request shape.
	if f.has("actor_token") || f.has("actor_token_type") {
		return nil, badRequest("actor tokens are not supported")
	}
	subject := f.get("subject_token")
	if subject == "" {
		return nil, badRequest("subject_token is required")
	}
	switch stt := f.get("subject_token_type"); stt {
	case TokenTypeAccessToken:
	case "":
		return nil, badRequest("subject_token_type is required")
	default:
		return nil, badRequest("subject_token_type must be " + TokenTypeAccessToken)
	}
	if f.resources == 0 || f.get("resource") == "" {
		return nil, badRequest("resource is required")
	}
	if f.resources > 1 {
		return nil, newError(http.StatusBadRequest, codeInvalidTarget, "exactly one resource is allowed")
	}
	var requested []string
	if f.has("scope") {
		requested = uniqueFields(f.get("scope"))
		if len(requested) == 0 {
			return nil, badRequest("scope is empty")
		}
	}
	edgeID := f.get("delegation_edge_id")
	if f.has("delegation_edge_id") && edgeID == "" {
		return nil, badRequest("delegation_edge_id is empty")
	}
	ca, oerr := readClientAuth(r, f)
	if oerr != nil {
		return nil, oerr
	}
	z, err := s.zone(ctx, zoneID)
	if err != nil {
		return nil, s.zoneFailure(zoneID, err)
	}
	if ca.present {
		if oerr := s.authenticate(ctx, zoneID, r, ca); oerr != nil {
			return nil, oerr
		}
	}

	// Subject token.
	iss := z.issuer
	sub, err := z.subjects.Verify(ctx, subject, mandate.Expect{Issuer: iss, ZoneID: zoneID, Audience: iss, Use: mandate.UseSession})
	if err != nil {
		return nil, invalidGrant("subject_token: " + err.Error())
	}
	if ca.present && ca.id != sub.ClientID {
		return nil, invalidGrant("subject_token was not issued to the authenticated client")
	}
	sess, err := s.session(ctx, zoneID, sub.SID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, invalidGrant("subject_token: unknown session")
	case err != nil:
		s.log.Warn("session lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("session state could not be read")
	}
	now := s.now()
	if sess.Status != store.StatusActive {
		return nil, invalidGrant("subject_token: session " + sess.Status)
	}
	if !now.Before(sess.ExpiresAt) {
		return nil, invalidGrant("subject_token: session expired")
	}
	if sess.ClientID != sub.ClientID {
		return nil, invalidGrant("subject_token: session belongs to another client")
	}

	// Resource.
	res, err := s.resource(ctx, z, zoneID, f.get("resource"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, newError(http.StatusBadRequest, codeInvalidTarget, "unknown resource")
	case err != nil:
		s.log.Warn("resource lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("resource could not be read")
	}
	if res.Archived {
		return nil, newError(http.StatusBadRequest, codeInvalidTarget, "resource is archived")
	}

	// Scopes.
	explicit := requested != nil
	for _, sc := range requested {
		if !slices.Contains(res.Scopes, sc) {
			return nil, newError(http.StatusBadRequest, codeInvalidScope, "scope "+sc+" is not declared by the resource")
		}
	}

	// Delegation: the whole path, re-validated against the live graph.
	var deleg *delegation
	if edgeID != "" {
		var oerr *oauthError
		if deleg, oerr = s.resolveDelegation(ctx, zoneID, edgeID, sess, res.Identifier, now); oerr != nil {
			return nil, oerr
		}
		leafScopes := deleg.leaf().Scopes
		if !explicit {
			requested = slices.Clone(leafScopes)
		} else if !subset(requested, leafScopes) {
			return nil, newError(http.StatusBadRequest, codeInvalidScope, "requested scopes exceed the delegation edge's scopes")
		}
	} else if !explicit {
		requested = slices.Clone(res.Scopes)
	}

	// Policy.
	in := &policy.Input{
		ZoneID:          zoneID,
		Action:          "token_exchange",
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
	d := s.policy.Evaluate(ctx, zoneID, in)
	if !d.Allow {
		s.log.Info("exchange denied by policy", zap.String("zone", zoneID), zap.String("client_id", sub.ClientID), zap.String("resource", res.Identifier), zap.String("reason", d.Reason))
		return nil, newError(http.StatusForbidden, codeAccessDenied, d.Reason)
	}
	granted := requested
	if d.HasScopes {
		granted = intersect(requested, d.Scopes)
		if len(granted) == 0 {
			return nil, newError(http.StatusForbidden, codeAccessDenied, "policy granted none of the requested scopes")
		}
	}

	// Lifetime: the configured mandate lifetime, never beyond the session.
	iat := now.Truncate(time.Second)
	exp := iat.Add(s.opts.MandateLifetime)
	limit := sess.ExpiresAt
	if deleg != nil {
		limit = deleg.expires
	}
	if limit.Before(exp) {
		exp = limit
	}
	scope := strings.Join(granted, " ")
	claims := &mandate.Claims{
		Issuer:    iss,
		Subject:   sub.ClientID,
		Audience:  res.Identifier,
		Expiry:    exp.Unix(),
		IssuedAt:  iat.Unix(),
		NotBefore: iat.Unix(),
		ID:        randomID(),
		ZoneID:    zoneID,
		ClientID:  sub.ClientID,
		SID:       sub.SID,
		RootSID:   sub.RootSID,
		Use:       mandate.UseResource,
		Scope:     scope,
	}
	if deleg != nil {
		root := deleg.rootSession()
		claims.Subject = root.ClientID
		claims.RootSID = root.ID
		claims.Act = deleg.actor()
		claims.DelegationEdgeID = deleg.leaf().ID
		claims.DelegationPath = deleg.ids()
		claims.HopCount = len(deleg.path)
		claims.DelegationGraphEpoch = deleg.epoch
	}
	tok, err := z.sign(mandate.TypResource, claims)
	if err != nil {
		s.log.Error("signing resource mandate failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("mandate could not be signed")
	}
	return &tokenResponse{
		AccessToken:     tok,
		IssuedTokenType: TokenTypeAccessToken,
		TokenType:       "Bearer",
		ExpiresIn:       exp.Unix() - iat.Unix(),
		Scope:           scope,
	}, nil
}

// uniqueFields splits a space-delimited scope string, dropping duplicates, keeping order.
func uniqueFields(s string) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
