package issuer

import (
	"context"
	"net/http"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// credentialsRequest is a client_credentials grant (docs/protocol.md section 2.1) as the
// transport parsed it.
type credentialsRequest struct {
	client ClientAuth
	// resources holds every resource parameter (RFC 8707): none asks for a session
	// mandate, one for a resource mandate for that resource.
	resources []string
	// scopes as in ExchangeRequest.Scopes; only meaningful with a resource.
	scopes []string
}

// clientCredentials authenticates the client and creates a session. Without a resource it
// returns the session mandate; with one it returns, in the same step, a policy-gated
// resource mandate for it under the new session, checked as an exchange would be
// (resource, scopes, policy with action "client_credentials").
func (s *Service) clientCredentials(ctx context.Context, zoneID string, req credentialsRequest) (*Issued, *Error) {
	ca := req.client
	if ca.ID == "" || !ca.HasSecret {
		desc := "client authentication is required"
		if ca.ID != "" {
			desc = "client_credentials requires a client secret (client_secret_basic or client_secret_post)"
		}
		e := newError(http.StatusUnauthorized, CodeInvalidClient, desc)
		e.basic = true
		return nil, e
	}
	resource := ""
	switch {
	case len(req.resources) > 1:
		return nil, invalidTarget("exactly one resource is allowed")
	case len(req.resources) == 1 && req.resources[0] == "":
		return nil, badRequest("resource is empty")
	case len(req.resources) == 1:
		resource = req.resources[0]
	}
	if req.scopes != nil && len(req.scopes) == 0 {
		return nil, badRequest("scope is empty")
	}
	if req.scopes != nil && resource == "" {
		return nil, invalidScope("a session mandate carries no scopes; name the resource the scopes are for")
	}
	z, err := s.zone(ctx, zoneID)
	if err != nil {
		return nil, s.zoneFailure(zoneID, err)
	}
	if e := s.authenticate(ctx, zoneID, ca); e != nil {
		return nil, e
	}
	now := s.now()
	sess := store.Session{
		ZoneID:    zoneID,
		ID:        store.NewID(""),
		ClientID:  ca.ID,
		Status:    store.StatusActive,
		CreatedAt: now.Truncate(time.Second),
		ExpiresAt: now.Truncate(time.Second).Add(s.opts.SessionLifetime),
	}
	var granted []string
	var res store.Resource
	if resource != "" {
		// Decided before the session is stored, so that a refusal leaves nothing behind.
		var e *Error
		if res, e = s.targetResource(ctx, z, zoneID, resource, ""); e != nil {
			return nil, e
		}
		if e := checkScopes(req.scopes, res); e != nil {
			return nil, e
		}
		requested := req.scopes
		if requested == nil {
			requested = slices.Clone(res.Scopes)
		}
		if granted, e = s.decide(ctx, &policy.Input{
			ZoneID:          zoneID,
			Action:          policy.ActionClientCredentials,
			Client:          policy.Client{ID: ca.ID},
			Session:         policy.Session{SID: sess.ID, RootSID: sess.ID},
			Resource:        policy.Resource{Identifier: res.Identifier, Scopes: res.Scopes},
			RequestedScopes: requested,
			Time:            now.Unix(),
		}); e != nil {
			return nil, e
		}
	}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		s.log.Warn("storing session failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("session could not be stored")
	}
	s.log.Info("session issued", zap.String("zone", zoneID), zap.String("client_id", ca.ID), zap.String("sid", sess.ID), zap.String("resource", resource))
	if resource != "" {
		return s.mint(z, zoneID, minted{
			clientID: ca.ID,
			sid:      sess.ID,
			rootSID:  sess.ID,
			resource: res.Identifier,
			scopes:   granted,
			limit:    sess.ExpiresAt,
			now:      now,
		})
	}
	claims := &mandate.Claims{
		Issuer:    z.issuer,
		Subject:   ca.ID,
		Audience:  z.issuer,
		Expiry:    sess.ExpiresAt.Unix(),
		IssuedAt:  sess.CreatedAt.Unix(),
		NotBefore: sess.CreatedAt.Unix(),
		ID:        store.NewID(""),
		ZoneID:    zoneID,
		ClientID:  ca.ID,
		SID:       sess.ID,
		RootSID:   sess.ID,
		Use:       mandate.UseSession,
	}
	tok, err := z.sign(mandate.TypSession, claims)
	if err != nil {
		s.log.Error("signing session mandate failed", zap.String("zone", zoneID), zap.Error(err))
		return nil, unavailable("mandate could not be signed")
	}
	return &Issued{Token: tok, Expires: sess.ExpiresAt, ExpiresIn: int64(s.opts.SessionLifetime / time.Second)}, nil
}
