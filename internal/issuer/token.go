package issuer

import (
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caracalgw/caracal/internal/httpjson"
)

// tokenResponse is the success body of both grants (RFC 6749 5.1, RFC 8693 2.2.1).
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// serveToken is the token endpoint: it parses the request into the grant's request type
// and answers what the domain decided.
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
	var issued *Issued
	switch gt := f.get("grant_type"); gt {
	case "":
		oerr = badRequest("grant_type is required")
	case GrantClientCreds:
		var req credentialsRequest
		if req, oerr = s.parseCredentials(r, f); oerr == nil {
			issued, oerr = s.clientCredentials(r.Context(), zoneID, req)
		}
	case GrantTokenExchange:
		var req ExchangeRequest
		if req, oerr = s.parseExchange(r, f); oerr == nil {
			req.ZoneID = zoneID
			issued, oerr = s.exchange(r.Context(), req)
		}
	default:
		oerr = newError(http.StatusBadRequest, CodeUnsupportedGrantType, "grant_type must be client_credentials or token-exchange")
	}
	if oerr != nil {
		if c := s.log.Check(zapcore.DebugLevel, "token request refused"); c != nil {
			c.Write(zap.String("zone", zoneID), zap.String("error", oerr.Code), zap.String("reason", oerr.Description))
		}
		writeError(w, s.Issuer(zoneID), oerr)
		return
	}
	httpjson.NoStore(w.Header())
	httpjson.Write(w, http.StatusOK, tokenResponse{
		AccessToken:     issued.Token,
		IssuedTokenType: TokenTypeAccessToken,
		TokenType:       "Bearer",
		ExpiresIn:       issued.ExpiresIn,
		Scope:           issued.Scope,
	})
}

// parseExchange reads a token exchange's parameters and client authentication.
func (s *Service) parseExchange(r *http.Request, f *form) (ExchangeRequest, *Error) {
	req := ExchangeRequest{
		SubjectToken:     f.get("subject_token"),
		SubjectTokenType: f.get("subject_token_type"),
		Resources:        f.resources,
		Audience:         f.get("audience"),
		EdgeID:           f.get("delegation_edge_id"),
		ActorToken:       f.has("actor_token") || f.has("actor_token_type"),
	}
	if f.has("audience") && req.Audience == "" {
		return req, badRequest("audience is empty")
	}
	if f.has("delegation_edge_id") && req.EdgeID == "" {
		return req, badRequest("delegation_edge_id is empty")
	}
	if f.has("scope") {
		req.Scopes = scopeList(f.get("scope"))
	}
	ca, oerr := s.readClientAuth(r, f)
	req.Client = ca
	return req, oerr
}

// parseCredentials reads a client_credentials request's parameters and client
// authentication.
func (s *Service) parseCredentials(r *http.Request, f *form) (credentialsRequest, *Error) {
	req := credentialsRequest{resources: f.resources}
	if f.has("scope") {
		req.scopes = scopeList(f.get("scope"))
	}
	ca, oerr := s.readClientAuth(r, f)
	req.client = ca
	return req, oerr
}

// scopeList splits a space-delimited scope parameter, dropping duplicates and keeping
// order. A parameter sent empty gives an empty, non-nil list.
func scopeList(s string) []string {
	out := []string{}
	for _, f := range strings.Fields(s) {
		if !contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// readClientAuth takes client credentials from HTTP Basic (RFC 6749 2.3.1, form-encoded
// parts) or from the client_id and client_secret parameters, never both. A client_id
// without client_secret is identification only (the "none" method of RFC 7591 2).
func (s *Service) readClientAuth(r *http.Request, f *form) (ClientAuth, *Error) {
	hdr := r.Header.Get("Authorization")
	inForm := f.has("client_id") || f.has("client_secret")
	source := s.opts.ClientIP(r)
	if hdr != "" {
		if inForm {
			return ClientAuth{}, badRequest("use either HTTP Basic or client_id and client_secret parameters, not both")
		}
		id, sec, ok := r.BasicAuth()
		if !ok {
			return ClientAuth{}, badRequest("the Authorization header must use the Basic scheme")
		}
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		sec, err2 = url.QueryUnescape(sec)
		if err1 != nil || err2 != nil || id == "" {
			return ClientAuth{}, badRequest("malformed Basic credentials")
		}
		return ClientAuth{ID: id, Secret: sec, HasSecret: true, Basic: true, Source: source}, nil
	}
	if !inForm {
		return ClientAuth{Source: source}, nil
	}
	if f.get("client_id") == "" {
		return ClientAuth{}, badRequest("client_id is required with client authentication")
	}
	return ClientAuth{ID: f.get("client_id"), Secret: f.get("client_secret"), HasSecret: f.has("client_secret"), Source: source}, nil
}
