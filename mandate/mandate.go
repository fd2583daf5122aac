// Package mandate defines Caracal mandates: the ES256 JWTs that the STS issues and that the gateway,
// the Coordinator and resource servers verify. It holds the claims, signing, verification (in the
// order of docs/protocol.md section 3) and a JWKS cache for verifiers that do not run next to the STS.
//
// The package has no Caddy imports so that a resource server can use it on its own.
package mandate

import (
	"slices"
	"strings"
)

// Header types and use values of the two kinds of mandate.
const (
	// TypSession is the JOSE typ header of a session mandate.
	TypSession = "session+jwt"
	// TypResource is the JOSE typ header of a resource mandate (RFC 9068 access token).
	TypResource = "at+jwt"
	// UseSession is the use claim of a session mandate.
	UseSession = "session"
	// UseResource is the use claim of a resource mandate.
	UseResource = "resource"
	// MaxTokenSize bounds the compact serialisation of a mandate, in bytes. Verifiers refuse
	// anything larger before decoding it, and the signer refuses to produce it.
	MaxTokenSize = 8192
)

// Actor is an RFC 8693 actor claim: the party acting, and the actor before it in the chain.
type Actor struct {
	Sub string `json:"sub"`
	Act *Actor `json:"act,omitempty"`
}

// Claims is the payload of a mandate (docs/protocol.md section 3).
type Claims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	Expiry    int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	NotBefore int64  `json:"nbf"`
	ID        string `json:"jti"`

	ZoneID   string `json:"zone_id"`
	ClientID string `json:"client_id"`
	SID      string `json:"sid"`
	RootSID  string `json:"root_sid"`
	Use      string `json:"use"`

	Scope string `json:"scope,omitempty"`
	Act   *Actor `json:"act,omitempty"`

	DelegationEdgeID     string   `json:"delegation_edge_id,omitempty"`
	DelegationPath       []string `json:"delegation_path,omitempty"`
	HopCount             int      `json:"hop_count,omitempty"`
	DelegationGraphEpoch int64    `json:"delegation_graph_epoch,omitempty"`
}

// Scopes returns the granted scopes, split on white space.
func (c *Claims) Scopes() []string {
	return strings.Fields(c.Scope)
}

// HasScopes reports whether every required scope was granted. No required scope is always satisfied.
func (c *Claims) HasScopes(required ...string) bool {
	for _, r := range required {
		if !ScopeGranted(c.Scope, r) {
			return false
		}
	}
	return true
}

// ScopeGranted reports whether the scope list granted (a scope claim) holds scope. It
// splits granted as Claims.Scopes does but builds no slice: verifiers call it on every
// request.
func ScopeGranted(granted, scope string) bool {
	for s := range strings.FieldsSeq(granted) {
		if s == scope {
			return true
		}
	}
	return false
}

// Anchors returns every id whose revocation kills this mandate: sid, root_sid, delegation_edge_id and
// each edge of delegation_path, without empty values or repeats, in that order.
func (c *Claims) Anchors() []string {
	out := make([]string, 0, 3+len(c.DelegationPath))
	add := func(id string) {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	add(c.SID)
	add(c.RootSID)
	add(c.DelegationEdgeID)
	for _, id := range c.DelegationPath {
		add(id)
	}
	return out
}

// IssuerURL returns the issuer of a zone: the STS's external base URL (trailing slashes dropped)
// followed by /zones/{zoneID}.
func IssuerURL(base, zoneID string) string {
	return strings.TrimRight(base, "/") + "/zones/" + zoneID
}

// typForUse maps a use claim to the typ header it must travel with.
func typForUse(use string) (string, bool) {
	switch use {
	case UseSession:
		return TypSession, true
	case UseResource:
		return TypResource, true
	}
	return "", false
}
