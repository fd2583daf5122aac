package issuer

import (
	"errors"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/httpjson"
	"github.com/caracalgw/caracal/internal/httproute"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// routes builds the router of the STS endpoints: a wrong method on one of them is 405
// with Allow, any other path 404, both as OAuth error objects.
func (s *Service) routes() *httproute.Router {
	table := []httproute.Route{
		{Method: http.MethodPost, Pattern: "/zones/{zone}/oauth2/token", Handler: s.serveToken},
		{Method: http.MethodPost, Pattern: "/zones/{zone}/oauth2/revoke", Handler: s.serveRevoke},
		{Method: http.MethodGet, Pattern: "/zones/{zone}/oauth2/authorize", Handler: s.serveAuthorize},
		{Method: http.MethodPost, Pattern: "/zones/{zone}/oauth2/authorize", Handler: s.serveAuthorize},
		{Method: http.MethodGet, Pattern: "/zones/{zone}/jwks.json", Handler: s.serveJWKS},
		{Method: http.MethodGet, Pattern: metadataPrefix + "/zones/{zone}", Handler: s.serveMetadata},
		{Method: http.MethodGet, Pattern: "/zones/{zone}/.well-known/oauth-authorization-server", Handler: s.serveMetadata},
	}
	return httproute.New(table,
		func(w http.ResponseWriter, allow string) {
			writeError(w, "", newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "method not allowed; use "+allow))
		},
		func(w http.ResponseWriter) {
			writeError(w, "", newError(http.StatusNotFound, CodeNotFound, "no such endpoint"))
		})
}

// metadataPrefix is where RFC 8414 places the metadata of an issuer with a path.
const metadataPrefix = "/.well-known/oauth-authorization-server"

// Handles reports whether the request's path belongs to the STS: everything under
// /zones/ and the RFC 8414 metadata paths of zones, whatever the method. ServeHTTP
// answers the unknown paths and wrong methods among them (404, 405) itself, so they
// never reach the next handler.
func (s *Service) Handles(r *http.Request) bool {
	return httproute.Under(r.URL.Path, "/zones") || httproute.Under(r.URL.Path, metadataPrefix+"/zones")
}

// ServeHTTP serves the STS endpoints of docs/protocol.md section 2: a wrong method on one of them is
// 405 with Allow, any other path 404, both as OAuth error objects.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// zoneParam validates the {zone} path segment; it writes a 404 and returns false when it
// is not a zone id.
func zoneParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	zoneID := r.PathValue("zone")
	if !mandate.ValidZoneID(zoneID) {
		writeError(w, "", newError(http.StatusNotFound, CodeNotFound, "unknown zone"))
		return "", false
	}
	return zoneID, true
}

// pathZone loads the zone of the {zone} path segment; it answers the failure (404 for a
// zone id that is not one or an unknown zone, 503 when the zone cannot be loaded) and
// returns false when there is none.
func (s *Service) pathZone(w http.ResponseWriter, r *http.Request) (string, *zoneState, bool) {
	zoneID, ok := zoneParam(w, r)
	if !ok {
		return "", nil, false
	}
	z, err := s.zone(r.Context(), zoneID)
	if err != nil {
		s.zoneError(w, zoneID, err)
		return "", nil, false
	}
	return zoneID, z, true
}

// serveJWKS publishes the zone's active key and the retired keys still needed.
func (s *Service) serveJWKS(w http.ResponseWriter, r *http.Request) {
	_, z, ok := s.pathZone(w, r)
	if !ok {
		return
	}
	z.mu.RLock()
	body := z.jwks
	z.mu.RUnlock()
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(jwksMaxAge))
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// metadata is the RFC 8414 document of a zone.
type metadata struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	JWKSURI                           string   `json:"jwks_uri"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	ScopesSupported                   []string `json:"scopes_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethods     []string `json:"revocation_endpoint_auth_methods_supported"`
}

func (s *Service) serveMetadata(w http.ResponseWriter, r *http.Request) {
	zoneID, z, ok := s.pathZone(w, r)
	if !ok {
		return
	}
	z.mu.RLock()
	scopes := z.scopes
	z.mu.RUnlock()
	iss := s.Issuer(zoneID)
	authMethods := []string{"client_secret_basic", "client_secret_post"}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(jwksMaxAge))
	httpjson.Write(w, http.StatusOK, metadata{
		Issuer:                iss,
		AuthorizationEndpoint: iss + "/oauth2/authorize",
		TokenEndpoint:         iss + "/oauth2/token",
		RevocationEndpoint:    iss + "/oauth2/revoke",
		JWKSURI:               iss + "/jwks.json",
		// No response type is supported: the authorization endpoint only refuses (see
		// serveAuthorize). The member is REQUIRED by RFC 8414, so it is an empty list.
		ResponseTypesSupported:            []string{},
		ScopesSupported:                   scopes,
		GrantTypesSupported:               []string{GrantClientCreds, GrantTokenExchange},
		TokenEndpointAuthMethodsSupported: authMethods,
		RevocationEndpointAuthMethods:     append([]string{"none"}, authMethods...),
	})
}

// serveAuthorize is the zone's authorization endpoint. Caracal issues mandates to
// applications only (client credentials and token exchange); no end user ever grants
// anything here, so every response type is unsupported. The endpoint exists because
// OAuth client libraries (the MCP SDK among them) require authorization_endpoint in
// the metadata. RFC 6749 section 4.1.2.1 sends errors to the redirect URI only when it
// is a registered one; no application registers redirect URIs, so the error is answered
// to the caller directly and nothing is ever redirected.
func (s *Service) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	if _, _, ok := s.pathZone(w, r); !ok {
		return
	}
	writeError(w, "", newError(http.StatusBadRequest, CodeUnsupportedResponseType,
		"this authorization server supports no response type: applications obtain mandates at the token endpoint (client_credentials, token exchange)"))
}

// zoneError answers a failure to load a zone: unknown zones are 404, anything else is a
// storage problem (503, never a guess).
func (s *Service) zoneError(w http.ResponseWriter, zoneID string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, "", newError(http.StatusNotFound, CodeNotFound, "unknown zone"))
		return
	}
	s.log.Warn("zone unavailable", zap.String("zone", zoneID), zap.Error(err))
	writeError(w, "", unavailable("zone state could not be loaded"))
}
