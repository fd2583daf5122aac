package issuer

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
)

// stsRoute is one endpoint of SPEC.md section 2.
type stsRoute struct {
	method  string
	pattern string
	handler http.HandlerFunc
}

// routes builds the router of the STS endpoints (method and path) and, for the same
// paths, a router that answers other methods with 405 and the allowed ones.
func (s *Service) routes() (routes, paths *http.ServeMux) {
	table := []stsRoute{
		{http.MethodPost, "/zones/{zone}/oauth2/token", s.serveToken},
		{http.MethodPost, "/zones/{zone}/oauth2/revoke", s.serveRevoke},
		{http.MethodGet, "/zones/{zone}/jwks.json", s.serveJWKS},
		{http.MethodGet, metadataPrefix + "/zones/{zone}", s.serveMetadata},
		{http.MethodGet, "/zones/{zone}/.well-known/oauth-authorization-server", s.serveMetadata},
	}
	routes, paths = http.NewServeMux(), http.NewServeMux()
	for _, rt := range table {
		routes.HandleFunc(rt.method+" "+rt.pattern, rt.handler)
		allow := rt.method
		if rt.method == http.MethodGet {
			allow += ", " + http.MethodHead // a GET pattern of ServeMux serves HEAD too
		}
		paths.HandleFunc(rt.pattern, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, "", newError(http.StatusMethodNotAllowed, codeInvalidRequest, "method not allowed; use "+allow))
		})
	}
	return routes, paths
}

// metadataPrefix is where RFC 8414 places the metadata of an issuer with a path.
const metadataPrefix = "/.well-known/oauth-authorization-server"

// Handles reports whether the request's path belongs to the STS: everything under
// /zones/ and the RFC 8414 metadata paths of zones, whatever the method. ServeHTTP
// answers the unknown paths and wrong methods among them (404, 405) itself, so they
// never reach the next handler.
func (s *Service) Handles(r *http.Request) bool {
	return under(r.URL.Path, "/zones") || under(r.URL.Path, metadataPrefix+"/zones")
}

// under reports whether path is prefix or below it.
func under(path, prefix string) bool {
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}

// ServeHTTP serves the STS endpoints of SPEC.md section 2: a wrong method on one of
// them is 405 with Allow, any other path 404, both as OAuth error objects.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	if _, pattern := s.paths.Handler(r); pattern != "" {
		s.paths.ServeHTTP(w, r)
		return
	}
	writeError(w, "", newError(http.StatusNotFound, codeNotFound, "no such endpoint"))
}

// zoneParam validates the {zone} path segment; it writes a 404 and returns false when it
// is not a zone id.
func zoneParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	zoneID := r.PathValue("zone")
	if !ZoneIDPattern.MatchString(zoneID) {
		writeError(w, "", newError(http.StatusNotFound, codeNotFound, "unknown zone"))
		return "", false
	}
	return zoneID, true
}

// serveJWKS publishes the zone's active key and the retired keys still needed.
func (s *Service) serveJWKS(w http.ResponseWriter, r *http.Request) {
	zoneID, ok := zoneParam(w, r)
	if !ok {
		return
	}
	z, err := s.zone(r.Context(), zoneID)
	if err != nil {
		s.zoneError(w, zoneID, err)
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
	TokenEndpoint                     string   `json:"token_endpoint"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	JWKSURI                           string   `json:"jwks_uri"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethods     []string `json:"revocation_endpoint_auth_methods_supported"`
}

func (s *Service) serveMetadata(w http.ResponseWriter, r *http.Request) {
	zoneID, ok := zoneParam(w, r)
	if !ok {
		return
	}
	if _, err := s.zone(r.Context(), zoneID); err != nil {
		s.zoneError(w, zoneID, err)
		return
	}
	iss := s.Issuer(zoneID)
	authMethods := []string{"client_secret_basic", "client_secret_post"}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(jwksMaxAge))
	writeJSON(w, http.StatusOK, metadata{
		Issuer:                            iss,
		TokenEndpoint:                     iss + "/oauth2/token",
		RevocationEndpoint:                iss + "/oauth2/revoke",
		JWKSURI:                           iss + "/jwks.json",
		GrantTypesSupported:               []string{GrantClientCreds, GrantTokenExchange},
		TokenEndpointAuthMethodsSupported: authMethods,
		RevocationEndpointAuthMethods:     append([]string{"none"}, authMethods...),
	})
}

// zoneError answers a failure to load a zone: unknown zones are 404, anything else is a
// storage problem (503, never a guess).
func (s *Service) zoneError(w http.ResponseWriter, zoneID string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, "", newError(http.StatusNotFound, codeNotFound, "unknown zone"))
		return
	}
	s.log.Warn("zone unavailable", zap.String("zone", zoneID), zap.Error(err))
	writeError(w, "", unavailable("zone state could not be loaded"))
}
