package issuer

import (
	"errors"
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caracalgw/caracal/internal/httpjson"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// serveRevoke is RFC 7009 for an application's own session: token is its session mandate.
// Client authentication is optional (the session mandate is itself the proof); when present
// it must be the token's client, and so must a client_id sent without a secret. As RFC 7009 2.2 asks, a token that is invalid, expired or
// already revoked is answered 200 and changes nothing.
func (s *Service) serveRevoke(w http.ResponseWriter, r *http.Request) {
	zoneID, ok := zoneParam(w, r)
	if !ok {
		return
	}
	realm := s.Issuer(zoneID)
	f, oerr := readForm(r)
	if oerr != nil {
		writeError(w, realm, oerr)
		return
	}
	token := f.get("token")
	if token == "" {
		writeError(w, realm, badRequest("token is required"))
		return
	}
	// token_type_hint is only a hint (RFC 7009 section 2.1): whatever it says, the token
	// itself decides, so a session mandate sent with "refresh_token" or an unknown hint
	// is still revoked.
	ca, oerr := s.readClientAuth(r, f)
	if oerr != nil {
		writeError(w, realm, oerr)
		return
	}
	ctx := r.Context()
	z, err := s.zone(ctx, zoneID)
	if err != nil {
		s.zoneError(w, zoneID, err)
		return
	}
	if ca.HasSecret {
		if oerr := s.authenticate(ctx, zoneID, ca); oerr != nil {
			writeError(w, realm, oerr)
			return
		}
	}
	claims, err := z.subjects.Verify(ctx, token, mandate.Expect{Issuer: z.issuer, ZoneID: zoneID, Audience: z.issuer, Use: mandate.UseSession})
	if err != nil {
		if errors.Is(err, mandate.ErrType) {
			writeError(w, realm, newError(http.StatusBadRequest, CodeUnsupportedTokenType, "only session mandates can be revoked here"))
			return
		}
		if c := s.log.Check(zapcore.DebugLevel, "revocation of an invalid token ignored"); c != nil {
			c.Write(zap.String("zone", zoneID), zap.Error(err))
		}
		httpjson.NoStore(w.Header())
		w.WriteHeader(http.StatusOK)
		return
	}
	switch {
	case ca.ID == "" || ca.ID == claims.ClientID:
	case ca.HasSecret:
		writeError(w, realm, newError(http.StatusBadRequest, CodeInvalidRequest, "the token was not issued to the authenticated client"))
		return
	default:
		// A client_id without a secret identifies the client ("none"); it must be the
		// token's client (RFC 6749 section 5.2, invalid_client).
		writeError(w, realm, newError(http.StatusUnauthorized, CodeInvalidClient, "client_id is not the client the token was issued to"))
		return
	}
	rev, err := s.store.RevokeSession(ctx, zoneID, claims.SID, "self-revoked", s.now())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("session revocation failed", zap.String("zone", zoneID), zap.Error(err))
		writeError(w, realm, unavailable("session could not be revoked"))
		return
	}
	if rev.Session == nil {
		// The session does not exist (any more): nothing to revoke.
		httpjson.NoStore(w.Header())
		w.WriteHeader(http.StatusOK)
		return
	}
	// Applied here before anything else, so that no exchange of this process slips
	// between the database write and the event's round trip through the transport.
	s.ApplyRevocation(zoneID, rev)
	if s.opts.Revoked != nil {
		s.opts.Revoked()
	}
	published := s.AwaitPublication(ctx, zoneID, "session "+claims.SID)
	s.log.Info("session revoked by its client", zap.String("zone", zoneID), zap.String("client_id", claims.ClientID), zap.String("sid", claims.SID),
		zap.Int("revoked_edges", len(rev.Edges)), zap.Bool("published", published))
	httpjson.NoStore(w.Header())
	w.WriteHeader(http.StatusOK)
}
