// Package verify lets a resource server check Caracal mandates without Caddy: pinned
// issuer and audience, required scopes, revocation (sid, root_sid, delegation edge and
// path), optional stale-epoch rejection, and RFC 6750 answers; and, with Guard, ends the
// responses whose mandate is revoked or expires while they are written. The
// caracal_mandate Caddy handler is built on both, so a resource server and the gateway
// decide alike, for requests and responses.
package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

// DefaultMaxStaleness is how old the revocation state may be before a fail-closed
// verifier refuses with 503.
const DefaultMaxStaleness = 15 * time.Second

// Options configures a Verifier.
type Options struct {
	// Issuer is the pinned zone issuer URL, {base}/zones/{zone}.
	Issuer string
	// Resource is this resource's identifier: the mandate's aud must equal it.
	Resource string
	// Scopes are required on every request (all of them).
	Scopes []string
	// Keys resolves the zone's signing keys. Nil fetches them from the issuer's
	// RFC 8414 metadata (mandate.RemoteKeys).
	Keys mandate.KeySource
	// Revocations is the revocation set to check on every request; required.
	Revocations *revocation.RevokedSet
	// Source feeds Revocations; the age of its Watermark is compared with MaxStaleness,
	// and a zero Watermark is stale. Nil means the set is local to this process and
	// never stale.
	Source revocation.Source
	// MaxStaleness bounds the age of the revocation state (DefaultMaxStaleness when 0).
	MaxStaleness time.Duration
	// FailOpen accepts requests while the revocation state is stale instead of
	// answering 503. Off by default: a gateway must not pass a mandate it cannot check.
	FailOpen bool
	// Epochs and RejectStaleEpoch reject delegated mandates whose
	// delegation_graph_epoch is older than the zone's current epoch.
	Epochs           *revocation.Epochs
	RejectStaleEpoch bool
	// Leeway for exp/nbf/iat (mandate.DefaultLeeway when 0).
	Leeway time.Duration
	// CacheEntries bounds the verified-token cache (mandate.DefaultCacheEntries when 0).
	CacheEntries int
	// Realm is the RFC 6750 realm (the resource identifier when empty).
	Realm string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Verifier checks resource mandates for one resource. It is safe for concurrent use.
type Verifier struct {
	opts   Options
	zoneID string
	cache  *mandate.CachedVerifier
	want   mandate.Expect
	now    func() time.Time
}

// ZoneFromIssuer returns the zone id of a zone issuer URL ({base}/zones/{zone}). The
// issuer is compared byte for byte with every mandate's iss, so it is refused unless the
// zone id appears in it literally (not percent-encoded) and nothing follows it: no
// trailing slash, query or fragment.
func ZoneFromIssuer(issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return "", fmt.Errorf("issuer %q is not an absolute URL", issuer)
	}
	if u.User != nil || strings.ContainsAny(issuer, "?#") {
		return "", fmt.Errorf("issuer %q must not carry user info, a query or a fragment", issuer)
	}
	path := u.EscapedPath()
	i := strings.LastIndex(path, "/zones/")
	if i < 0 {
		return "", fmt.Errorf("issuer %q is not of the form {base}/zones/{zone}", issuer)
	}
	zone := path[i+len("/zones/"):]
	if !mandate.ValidZoneID(zone) {
		return "", fmt.Errorf("issuer %q does not end in a zone id matching %s", issuer, mandate.ZoneIDSyntax)
	}
	return zone, nil
}

// New validates opts and returns a Verifier.
func New(opts Options) (*Verifier, error) {
	zoneID, err := ZoneFromIssuer(opts.Issuer)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if opts.Resource == "" {
		return nil, errors.New("verify: the resource identifier is required")
	}
	for _, s := range opts.Scopes {
		if s == "" || strings.ContainsFunc(s, unicode.IsSpace) {
			return nil, fmt.Errorf("verify: required scope %q is empty or holds white space (list each scope separately)", s)
		}
	}
	if opts.Revocations == nil {
		return nil, errors.New("verify: a revocation store is required")
	}
	if opts.RejectStaleEpoch && opts.Epochs == nil {
		return nil, errors.New("verify: rejecting stale epochs needs an epoch tracker")
	}
	if opts.Leeway > revocation.ExpiryGrace {
		return nil, fmt.Errorf("verify: leeway %s exceeds the revocation grace %s", opts.Leeway, revocation.ExpiryGrace)
	}
	if opts.MaxStaleness <= 0 {
		opts.MaxStaleness = DefaultMaxStaleness
	}
	if opts.Realm == "" {
		opts.Realm = opts.Resource
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Keys == nil {
		rk, err := mandate.NewRemoteKeys(mandate.RemoteOptions{Issuer: opts.Issuer, Now: opts.Now})
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
		}
		opts.Keys = rk
	}
	v := &Verifier{
		opts:   opts,
		zoneID: zoneID,
		now:    opts.Now,
		want:   mandate.Expect{Issuer: opts.Issuer, ZoneID: zoneID, Audience: opts.Resource, Use: mandate.UseResource},
	}
	v.cache = mandate.NewCachedVerifier(&mandate.Verifier{Keys: opts.Keys, Leeway: opts.Leeway, Now: opts.Now}, opts.CacheEntries)
	return v, nil
}

// MaxStaleness is the effective bound on the revocation state's age.
func (v *Verifier) MaxStaleness() time.Duration { return v.opts.MaxStaleness }

// Leeway is the effective clock leeway on exp, nbf and iat: a mandate verifies until
// exp plus this.
func (v *Verifier) Leeway() time.Duration { return mandate.EffectiveLeeway(v.opts.Leeway) }

// ZoneID is the pinned zone.
func (v *Verifier) ZoneID() string { return v.zoneID }

// Realm is the RFC 6750 realm of the answers.
func (v *Verifier) Realm() string { return v.opts.Realm }

// Verify checks a resource mandate in the order of docs/protocol.md section 3 and returns its
// claims (shared: do not modify them). Failures are *Error values carrying the RFC 6750
// answer.
func (v *Verifier) Verify(ctx context.Context, token string) (*mandate.Claims, error) {
	if err := v.fresh(); err != nil {
		return nil, err
	}
	c, err := v.cache.Verify(ctx, token, v.want)
	if err != nil {
		if errors.Is(err, mandate.ErrKeysUnavailable) {
			return nil, &Error{Status: http.StatusServiceUnavailable, Description: "signing keys of the zone are unavailable"}
		}
		desc := err.Error()
		if errors.Is(err, mandate.ErrType) || errors.Is(err, mandate.ErrUse) {
			desc = "a resource mandate is required (session mandates are accepted only by the STS)"
		}
		return nil, invalidToken(desc)
	}
	if c.SID == "" || c.RootSID == "" {
		return nil, invalidToken("mandate carries no session")
	}
	if err := v.checkRevoked(c); err != nil {
		return nil, err
	}
	if !c.HasScopes(v.opts.Scopes...) {
		return nil, &Error{Status: http.StatusForbidden, Code: "insufficient_scope", Description: "the mandate lacks a required scope", Scope: strings.Join(v.opts.Scopes, " ")}
	}
	if v.opts.RejectStaleEpoch && c.DelegationEdgeID != "" {
		if cur, ok := v.opts.Epochs.Current(v.zoneID); ok && c.DelegationGraphEpoch < cur {
			return nil, invalidToken("the delegation graph changed after this mandate was issued")
		}
	}
	return c, nil
}

// Revoked reports whether any anchor of c has been revoked since it was verified; a
// streaming response calls it at every chunk boundary.
func (v *Verifier) Revoked(c *mandate.Claims) bool {
	if _, hit := v.opts.Revocations.Revoked(v.zoneID, c.SID, c.RootSID, c.DelegationEdgeID); hit {
		return true
	}
	_, hit := v.opts.Revocations.Revoked(v.zoneID, c.DelegationPath...)
	return hit
}

// Watch returns a channel closed when any anchor of c is revoked, and its release.
func (v *Verifier) Watch(c *mandate.Claims) (<-chan struct{}, func()) {
	return v.opts.Revocations.Watch(v.zoneID, c.Anchors())
}

func (v *Verifier) checkRevoked(c *mandate.Claims) error {
	if v.Revoked(c) {
		return invalidToken("the mandate has been revoked")
	}
	return nil
}

// fresh refuses when the revocation state is older than the bound and the verifier fails
// closed. The state's age is that of the source's watermark: the instant before which
// every acknowledged revocation is known to have been applied.
func (v *Verifier) fresh() error {
	if v.opts.Source == nil || v.opts.FailOpen {
		return nil
	}
	wm := v.opts.Source.Watermark()
	age := v.now().Sub(wm)
	if !wm.IsZero() && age <= v.opts.MaxStaleness {
		return nil
	}
	return &Error{Status: http.StatusServiceUnavailable, RetryAfter: staleRetryAfter, Description: StaleReason(v.opts.Source, age)}
}

// staleRetryAfter is the Retry-After of a stale answer: heartbeats come every second, so
// a state that recovers does so within a few.
const staleRetryAfter = 2

// StaleReason describes why src's revocation state is stale, age being its watermark's
// age: the description of a stale 503 and of the WARN line when the state turns stale.
func StaleReason(src revocation.Source, age time.Duration) string {
	const prefix = "revocation state is stale: "
	if !src.Watermark().IsZero() {
		return prefix + fmt.Sprintf("last watermark %.0fs old (no recent heartbeat from a publisher)", age.Seconds())
	}
	st := src.Stats()
	switch {
	case !st.Synced:
		return prefix + "never fetched from the transport"
	case st.BadSignature > 0:
		return prefix + fmt.Sprintf("no valid heartbeat ever received; %d entries dropped for bad signatures, check stream_key", st.BadSignature)
	default:
		return prefix + "no heartbeat ever received; check stream_key and the transport (a publisher must relay to it)"
	}
}
