package caddymodules

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caracalgw/caracal/internal/mcprules"
	"github.com/caracalgw/caracal/verify"
)

// wellKnownResource is the well-known URI suffix of RFC 9728 section 3.
const wellKnownResource = "/.well-known/oauth-protected-resource"

// resourceMetadata is the RFC 9728 protected resource metadata a route serves, and the
// URL its challenges point to.
type resourceMetadata struct {
	// url is the metadata URL, sent as resource_metadata in every Bearer challenge.
	url string
	// path is url's path: the request path the handler answers with the document.
	path string
	// doc is the JSON document.
	doc []byte
}

// metadataURL derives the RFC 9728 section 3.1 metadata URL of resource: the well-known
// suffix inserted between the host and the path, a trailing slash of the path removed.
// It returns "" when resource is not an absolute http or https URL without query or
// fragment.
func metadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + wellKnownResource + strings.TrimSuffix(u.EscapedPath(), "/")
}

// newResourceMetadata builds the metadata of h's route. setting is the
// resource_metadata option: "" (derive the URL from the resource), "off", or the URL
// to advertise and serve. It returns nil when metadata is off, or left to derive
// from a resource that is not an http(s) URL.
func newResourceMetadata(setting, issuer, resource string, scopes []string, mcp *MCPConfig) (*resourceMetadata, error) {
	if setting == "off" {
		return nil, nil
	}
	where := setting
	if where == "" {
		if where = metadataURL(resource); where == "" {
			return nil, nil
		}
	}
	u, err := url.Parse(where)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("resource_metadata must be an absolute http(s) URL without query or fragment, or off: %q", setting)
	}
	if strings.ContainsAny(where, `"\`) {
		return nil, fmt.Errorf("resource_metadata cannot hold a quote or a backslash: %q", setting)
	}
	supported := slices.Clone(scopes)
	if mcp != nil {
		for _, s := range mcp.scopes() {
			if !slices.Contains(supported, s) {
				supported = append(supported, s)
			}
		}
	}
	doc, err := json.Marshal(struct {
		Resource             string   `json:"resource"`
		AuthorizationServers []string `json:"authorization_servers"`
		ScopesSupported      []string `json:"scopes_supported,omitempty"`
		BearerMethods        []string `json:"bearer_methods_supported"`
	}{resource, []string{issuer}, supported, []string{"header"}})
	if err != nil {
		return nil, err
	}
	path := u.Path
	if path == "" {
		path = "/"
	}
	return &resourceMetadata{url: where, path: path, doc: doc}, nil
}

// serve answers a request for the metadata document: GET and HEAD get the JSON,
// other methods 405.
func (m *resourceMetadata) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "max-age=300")
	h.Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(m.doc)
	}
}

// challenge returns the WWW-Authenticate value of e with, when the route serves
// metadata, the resource_metadata parameter of RFC 9728 section 5.1.
func (m *resourceMetadata) challenge(realm string, e *verify.Error) string {
	c := verify.Challenge(realm, e)
	if m != nil {
		c += `, resource_metadata="` + m.url + `"`
	}
	return c
}

// setErrorHeaders sets the header fields of e's answer, as verify.SetErrorHeaders
// does, with the resource_metadata parameter in the challenge.
func (m *resourceMetadata) setErrorHeaders(h http.Header, realm string, e *verify.Error) {
	verify.SetErrorHeaders(h, realm, e)
	if e.Status != http.StatusServiceUnavailable {
		h.Set("WWW-Authenticate", m.challenge(realm, e))
	}
}

// scopesOf returns the scopes named by rules, without the allow and deny keywords.
func scopesOf(dst []string, rules ...[]string) []string {
	for _, scopes := range rules {
		for _, s := range scopes {
			if s != mcprules.Allow && s != mcprules.Deny && !slices.Contains(dst, s) {
				dst = append(dst, s)
			}
		}
	}
	return dst
}
