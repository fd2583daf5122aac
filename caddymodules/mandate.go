// Package caddymodules is the Caddy glue of the Caracal gateway: the caracal_mandate HTTP
// handler that verifies resource mandates in front of reverse_proxy (docs/protocol.md section 7),
// and its Caddyfile directive. Responses are guarded by verify.Guard, which re-checks
// revocation while they stream.
package caddymodules

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caracalgw/caracal/internal/caddydefaults"
	"github.com/caracalgw/caracal/internal/caddyrevocation"
	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/verify"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler verifies the request's resource mandate and guards the response.
//
// On an admitted request it replaces every client-sent X-Caracal-* header with
// X-Caracal-Sub, -Client-Id, -Zone, -Scope and -Sid, and sets these placeholders:
//
//	{http.auth.user.id}         the mandate's sub
//	{http.auth.user.client_id}  its client_id
//	{http.auth.user.zone_id}    its zone
//	{http.auth.user.scope}      its scopes, space-separated
//	{http.auth.user.sid}        its session id
//	{http.auth.user.root_sid}   the session id at the root of its delegation chain
//	{http.auth.user.jti}        its jti
//
// A refused request, when the server has error routes (handle_errors), reaches them
// with the WWW-Authenticate (or, for 503, Retry-After) header already set, the usual
// {http.error.status_code} and {http.error.message}, and:
//
//	{http.auth.caracal.error}              the RFC 6750 error code (empty for a missing token or a 503)
//	{http.auth.caracal.error_description}  the reason, safe to send
type Handler struct {
	// Issuer is the zone issuer URL ({base}/zones/{zone}) whose mandates are accepted.
	Issuer string `json:"issuer"`
	// Resource is this route's resource identifier; a mandate's aud must equal it.
	Resource string `json:"resource"`
	// Scopes are required on every request.
	Scopes []string `json:"scopes,omitempty"`
	// Revocation selects the revocation transport: local (the in-process bus, the
	// default) or a Redis URL, with an optional stream key.
	Revocation caddyrevocation.Config `json:"revocation,omitzero"`
	// MaxStaleness is how old the revocation state may be (default 15s) before OnStale
	// applies.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`
	// OnStale is "deny" (default: answer 503) or "allow".
	OnStale string `json:"on_stale,omitempty"`
	// CheckBytes is the response re-check interval in bytes (default 4096).
	CheckBytes int `json:"check_bytes,omitempty"`
	// Leeway for exp/nbf/iat (default 30s).
	Leeway caddy.Duration `json:"leeway,omitempty"`
	// ForwardMandate forwards the Authorization header upstream (default true). In
	// exchange mode the forwarded mandate is the resource mandate.
	ForwardMandate *bool `json:"forward_mandate,omitempty"`
	// RejectStaleEpoch refuses delegated mandates issued before the zone's latest
	// delegation graph change.
	RejectStaleEpoch bool `json:"reject_stale_epoch,omitempty"`
	// EndOnExpiry ends a response that is still streaming when its mandate expires,
	// that is when it would no longer verify: exp plus the leeway (default true).
	EndOnExpiry *bool `json:"end_on_expiry,omitempty"`
	// TrustPoolRaw is the certificate pool trusted when fetching the issuer's metadata and
	// JWKS over HTTPS: a tls.ca_pool.source module, as reverse_proxy's tls_trust_pool
	// (inline PEM, file, pki_root of the local pki app, ...). Without it the system roots
	// are trusted. Not used when this process's caracal_sts issues for the zone.
	TrustPoolRaw json.RawMessage `json:"tls_trust_pool,omitempty" caddy:"namespace=tls.ca_pool.source inline_key=provider"`
	// JWKSFile is a JWKS document on disk holding the zone's keys, for deployments that
	// cannot reach the issuer: nothing is fetched, and a rotation needs a new file and a
	// config reload.
	JWKSFile string `json:"jwks_file,omitempty"`
	// Exchange accepts a session mandate and exchanges it at the STS for a resource
	// mandate of this route's resource (see docs/protocol.md section 7).
	Exchange *ExchangeConfig `json:"exchange,omitempty"`
	// ResourceMetadata is the URL of the route's RFC 9728 protected resource metadata,
	// which the handler serves (GET) when a request for that URL's path reaches it and
	// names in every Bearer challenge as resource_metadata. Empty derives it from the
	// resource as RFC 9728 section 3.1 does (https://h/mcp gives
	// https://h/.well-known/oauth-protected-resource/mcp); "off" serves and names none.
	ResourceMetadata string `json:"resource_metadata,omitempty"`
	// MCP makes the route MCP-aware: per-tool and per-method scope rules on every
	// JSON-RPC POST, and optionally a filtered tools/list (docs/mcp.md).
	MCP *MCPConfig `json:"mcp,omitempty"`

	verifier  *verify.Verifier
	guard     *verify.Guard
	pipeline  *caddyrevocation.Handle
	exchanger *exchanger
	metadata  *resourceMetadata
	mcp       *mcpRoute
	forward   bool
	endOnExp  bool
	// clock is the guard's clock: verify.SystemClock when nil.
	clock   verify.Clock
	logger  *zap.Logger
	metrics *metrics
	// stopWatch ends the goroutine logging staleness changes.
	stopWatch func()
	// stopKeys ends the subscription to the zone's key changes.
	stopKeys func()
	// remote is the key source fetching the issuer's JWKS, nil when keys are local or
	// come from jwks_file.
	remote *mandate.RemoteKeys
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.caracal_mandate", New: func() caddy.Module { return new(Handler) }}
}

// Provision takes the settings left out from the caracal global option and builds the
// verifier: keys in process when the caracal_sts app of this configuration issues for
// the zone, else from the issuer's metadata.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	defaults, err := caddydefaults.Of(ctx)
	if err != nil {
		return err
	}
	if h.Issuer == "" {
		h.Issuer = defaults.Issuer
	}
	if h.CheckBytes == 0 {
		h.CheckBytes = verify.DefaultCheckBytes
	}
	// Caddy validates after provisioning; nothing below is opened for a configuration
	// that Validate refuses.
	if err := h.Validate(); err != nil {
		return err
	}
	h.forward = h.ForwardMandate == nil || *h.ForwardMandate
	h.endOnExp = h.EndOnExpiry == nil || *h.EndOnExpiry

	app := stsApp(ctx)
	sts := stsService(app)
	rev := h.Revocation
	if rc, ok := app.(interface{ RevocationConfig() caddyrevocation.Config }); ok && rev == (caddyrevocation.Config{}) {
		// No revocation line: hear what the STS of this process publishes, over the
		// same transport and with the same key.
		rev = rc.RevocationConfig()
	}
	rev = rev.WithDefaults(defaults.Revocation)
	if h.pipeline, err = caddyrevocation.Open(ctx, rev, h.logger); err != nil {
		return err
	}
	if h.pipeline.Transport == "local" && sts == nil {
		h.logger.Warn("revocation transport is local and this process runs no caracal_sts app: no publisher can ever send heartbeats, so every request is refused with 503; configure the STS's revocation transport (e.g. a redis:// URL and its stream_key)",
			zap.String("resource", h.Resource))
	}
	h.metrics = registerMetrics(ctx.GetMetricsRegistry())
	var keys mandate.KeySource
	if sts != nil {
		if zoneID, ok := sts.ZoneOf(h.Issuer); ok {
			keys = sts.Keys(zoneID)
		}
	}
	if keys == nil {
		if keys, err = h.remoteKeys(ctx); err != nil {
			return err
		}
	}
	var source = h.pipeline.Source
	h.verifier, err = verify.New(verify.Options{
		Issuer:           h.Issuer,
		Resource:         h.Resource,
		Scopes:           h.Scopes,
		Keys:             keys,
		Revocations:      h.pipeline.Revocations,
		Source:           source,
		MaxStaleness:     time.Duration(h.MaxStaleness),
		FailOpen:         h.OnStale == "allow",
		Epochs:           h.pipeline.Epochs,
		RejectStaleEpoch: h.RejectStaleEpoch,
		Leeway:           time.Duration(h.Leeway),
	})
	if err != nil {
		return err
	}
	if err := h.newGuard(); err != nil {
		return err
	}
	if h.Exchange != nil {
		if h.exchanger, err = newExchanger(h.Exchange, h.Issuer, h.Resource, h.Scopes, sts, h.verifier.ZoneID()); err != nil {
			return err
		}
	}
	if h.MCP != nil {
		if h.mcp, err = h.MCP.compile(); err != nil {
			return err
		}
	}
	if h.metadata, err = newResourceMetadata(h.ResourceMetadata, h.Issuer, h.Resource, h.Scopes, h.MCP); err != nil {
		return err
	}
	if h.OnStale != "allow" {
		h.stopWatch = watchFreshness(h.logger.With(zap.String("resource", h.Resource)), h.pipeline.Source, h.verifier.MaxStaleness())
	}
	return nil
}

// Validate checks the configuration (after Provision filled in the defaults). The
// verifier, the response guard and the exchanger check the values they own (the
// issuer's form, the leeway, check_bytes, the token endpoint) when Provision builds them.
func (h *Handler) Validate() error {
	if h.Issuer == "" {
		return errors.New("issuer is required (here or in the caracal global option)")
	}
	if h.Resource == "" {
		return errors.New("resource is required")
	}
	switch h.OnStale {
	case "", "deny", "allow":
	default:
		return fmt.Errorf("on_stale must be deny or allow, not %q", h.OnStale)
	}
	return nil
}

// newGuard builds the response guard of h's verifier.
func (h *Handler) newGuard() error {
	g, err := verify.NewGuard(h.verifier, verify.GuardOptions{CheckBytes: h.CheckBytes, KeepOnExpiry: !h.endOnExp, Clock: h.clock})
	if err != nil {
		return err
	}
	h.guard = g
	return nil
}

// stsApp returns the caracal_sts app of this configuration, nil when there is none.
func stsApp(ctx caddy.Context) any {
	v, err := ctx.AppIfConfigured("caracal_sts")
	if err != nil {
		return nil
	}
	return v
}

// stsService returns the STS of the caracal_sts app as the gateway uses it, nil without
// one.
func stsService(app any) localSTS {
	s, ok := app.(interface{ Service() *issuer.Service })
	if !ok || s.Service() == nil {
		return nil
	}
	return s.Service()
}

// Cleanup stops the freshness watch and releases the revocation pipeline.
func (h *Handler) Cleanup() error {
	if h.stopWatch != nil {
		h.stopWatch()
	}
	if h.stopKeys != nil {
		h.stopKeys()
	}
	return h.pipeline.Release()
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.metadata != nil && r.URL.Path == h.metadata.path {
		h.metadata.serve(w, r)
		return nil
	}
	token, err := verify.BearerToken(r)
	var claims *mandate.Claims
	if err == nil {
		if h.exchanger != nil {
			claims, token, err = h.exchanger.resourceMandate(r.Context(), token, h.verifier)
		} else {
			claims, err = h.verifier.Verify(r.Context(), token)
		}
	}
	if err != nil {
		return h.refuse(w, r, err)
	}
	h.metrics.allowed.Inc()

	// Header hygiene: nothing the client sent under X-Caracal-* (or a name an upstream
	// reads as that) survives, in the header or the trailer.
	stripIdentity(r)
	// Canonical keys, assigned directly: Header.Set would canonicalise them per request.
	// The five values share one backing array, each capped to its own element.
	ids := [...]string{claims.Subject, claims.ClientID, claims.ZoneID, claims.Scope, claims.SID}
	vals := ids[:]
	r.Header["X-Caracal-Sub"] = vals[0:1:1]
	r.Header["X-Caracal-Client-Id"] = vals[1:2:2]
	r.Header["X-Caracal-Zone"] = vals[2:3:3]
	r.Header["X-Caracal-Scope"] = vals[3:4:4]
	r.Header["X-Caracal-Sid"] = vals[4:5:5]
	if !h.forward {
		r.Header.Del("Authorization")
	} else if h.exchanger != nil {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", claims.Subject)
		repl.Set("http.auth.user.client_id", claims.ClientID)
		repl.Set("http.auth.user.zone_id", claims.ZoneID)
		repl.Set("http.auth.user.scope", claims.Scope)
		repl.Set("http.auth.user.sid", claims.SID)
		repl.Set("http.auth.user.root_sid", claims.RootSID)
		repl.Set("http.auth.user.jti", claims.ID)
	}

	var listing bool
	if h.mcp != nil && carriesMessage(r) {
		m, ok := h.checkMCP(w, r, claims)
		if !ok {
			return nil
		}
		listing = h.mcp.filter && m.Method == "tools/list"
	}

	gw, gr := h.guard.Wrap(w, r, claims)
	defer func() {
		// Runs when reverse_proxy panics with http.ErrAbortHandler too.
		gw.Close()
		if gw.Aborted() {
			h.metrics.streamsCut.Inc()
			h.logger.Info("response aborted: mandate revoked or expired", zap.String("zone", claims.ZoneID), zap.String("sid", claims.SID), zap.String("jti", claims.ID))
		}
	}()
	if listing {
		tf := h.newToolsFilter(gw, claims.Scope)
		err = next.ServeHTTP(tf, gr)
		if ferr := tf.close(); ferr != nil && !gw.Aborted() {
			h.logger.Warn("tools/list response could not be filtered: response aborted", zap.Error(ferr), zap.String("zone", claims.ZoneID), zap.String("sid", claims.SID))
			panic(http.ErrAbortHandler)
		}
	} else {
		err = next.ServeHTTP(gw, gr)
	}
	if gw.Aborted() {
		if gw.Started() {
			// Headers are out: make sure the client cannot take the response as complete.
			panic(http.ErrAbortHandler)
		}
		return h.refuse(w, r, &verify.Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "the mandate has been revoked"})
	}
	return err
}

// refuse answers a refusal per RFC 6750 and counts it. When the server has error
// routes (handle_errors), the refusal's header fields (WWW-Authenticate, or Retry-After
// for a 503) are set and the refusal is returned as a caddyhttp.HandlerError, so that
// the routes write the body; the placeholders http.auth.caracal.error and
// http.auth.caracal.error_description hold its RFC 6750 code and description. Without
// error routes the handler writes the description as the body itself.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) error {
	var ve *verify.Error
	isRefusal := errors.As(err, &ve)
	if isRefusal && ve.Status == http.StatusUnauthorized && ve.Code == "" && ve.Scope == "" && len(h.Scopes) > 0 {
		// A request without a mandate learns the scopes the route needs (RFC 6750
		// section 3), which is how MCP clients choose what to ask the STS for.
		withScope := *ve
		withScope.Scope = strings.Join(h.Scopes, " ")
		ve = &withScope
	}
	if isRefusal {
		h.metrics.refused.WithLabelValues(refusalLabel(ve)).Inc()
		if c := h.logger.Check(zapcore.DebugLevel, "mandate refused"); c != nil {
			c.Write(zap.Int("status", ve.Status), zap.String("error", ve.Code), zap.String("reason", ve.Description), zap.String("path", r.URL.Path))
		}
	}
	if !hasErrorRoutes(r) {
		if !isRefusal {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return nil
		}
		h.metadata.setErrorHeaders(w.Header(), h.verifier.Realm(), ve)
		http.Error(w, ve.Description, ve.Status)
		return nil
	}
	if !isRefusal {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	h.metadata.setErrorHeaders(w.Header(), h.verifier.Realm(), ve)
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.caracal.error", ve.Code)
		repl.Set("http.auth.caracal.error_description", ve.Description)
	}
	return caddyhttp.Error(ve.Status, ve)
}

// hasErrorRoutes reports whether the server serving r has error routes (handle_errors).
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return ok && srv.Errors != nil && len(srv.Errors.Routes) > 0
}

func refusalLabel(e *verify.Error) string {
	switch {
	case e.Status == http.StatusServiceUnavailable:
		return "unavailable"
	case e.Code == "":
		return "missing"
	default:
		return e.Code
	}
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
