// Package caddymodules is the Caddy glue of the Caracal gateway: the caracal_mandate HTTP
// handler that verifies resource mandates in front of reverse_proxy (SPEC.md section 7),
// its Caddyfile directive, and the response writer that re-checks revocation while a
// response streams.
package caddymodules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/caddyrev"
	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/verify"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// DefaultCheckBytes is how often (in response bytes) revocation is re-checked.
const DefaultCheckBytes = 4096

// Handler verifies the request's resource mandate and guards the response.
type Handler struct {
	// Issuer is the zone issuer URL ({base}/zones/{zone}) whose mandates are accepted.
	Issuer string `json:"issuer"`
	// Resource is this route's resource identifier; a mandate's aud must equal it.
	Resource string `json:"resource"`
	// Scopes are required on every request.
	Scopes []string `json:"scopes,omitempty"`
	// Revocation selects the revocation transport: local (the in-process bus, the
	// default) or a Redis URL, with an optional stream key.
	Revocation caddyrev.Config `json:"revocation,omitzero"`
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
	// mandate of this route's resource (see SPEC.md section 7).
	Exchange *ExchangeConfig `json:"exchange,omitempty"`

	verifier  *verify.Verifier
	pipeline  *caddyrev.Handle
	exchanger *exchanger
	forward   bool
	endOnExp  bool
	// leeway is the effective clock leeway of the verifier: a response ends when its
	// mandate stops verifying, at exp plus this, not at exp itself.
	leeway  time.Duration
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

// Provision builds the verifier: keys in process when the caracal_sts app of this
// configuration issues for the zone, else from the issuer's metadata.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Issuer == "" || h.Resource == "" {
		return errors.New("caracal_mandate: issuer and resource are required")
	}
	if h.CheckBytes == 0 {
		h.CheckBytes = DefaultCheckBytes
	}
	if h.CheckBytes < 512 || h.CheckBytes > 1<<20 {
		return fmt.Errorf("caracal_mandate: check_bytes %d is outside 512..1048576", h.CheckBytes)
	}
	switch h.OnStale {
	case "", "deny", "allow":
	default:
		return fmt.Errorf("caracal_mandate: on_stale must be deny or allow, not %q", h.OnStale)
	}
	h.forward = h.ForwardMandate == nil || *h.ForwardMandate
	h.endOnExp = h.EndOnExpiry == nil || *h.EndOnExpiry
	h.leeway = effectiveLeeway(time.Duration(h.Leeway))

	app := stsApp(ctx)
	sts := stsService(app)
	rev := h.Revocation
	if rc, ok := app.(interface{ RevocationConfig() caddyrev.Config }); ok && rev == (caddyrev.Config{}) {
		// No revocation line: hear what the STS of this process publishes, over the
		// same transport and with the same key.
		rev = rc.RevocationConfig()
	}
	var err error
	if h.pipeline, err = caddyrev.Open(ctx, rev, h.logger); err != nil {
		return fmt.Errorf("caracal_mandate: %w", err)
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
			return fmt.Errorf("caracal_mandate: %w", err)
		}
	}
	var source = h.pipeline.Source
	h.verifier, err = verify.New(verify.Options{
		Issuer:           h.Issuer,
		Resource:         h.Resource,
		Scopes:           h.Scopes,
		Keys:             keys,
		Revocations:      h.pipeline.Store,
		Source:           source,
		MaxStaleness:     time.Duration(h.MaxStaleness),
		FailOpen:         h.OnStale == "allow",
		Epochs:           h.pipeline.Epochs,
		RejectStaleEpoch: h.RejectStaleEpoch,
		Leeway:           time.Duration(h.Leeway),
	})
	if err != nil {
		return fmt.Errorf("caracal_mandate: %w", err)
	}
	if h.Exchange != nil {
		if h.exchanger, err = newExchanger(h.Exchange, h.Issuer, h.Resource, h.Scopes, sts, h.verifier.ZoneID()); err != nil {
			return fmt.Errorf("caracal_mandate: %w", err)
		}
	}
	if h.OnStale != "allow" {
		h.stopWatch = watchFreshness(h.logger.With(zap.String("resource", h.Resource)), h.pipeline.Source, h.verifier.MaxStaleness())
	}
	return nil
}

// effectiveLeeway is the leeway mandate.Verifier applies for a configured one: the
// default when zero, none when negative.
func effectiveLeeway(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return mandate.DefaultLeeway
	case d < 0:
		return 0
	}
	return d
}

// stsApp returns the caracal_sts app of this configuration, nil when there is none.
func stsApp(ctx caddy.Context) any {
	v, err := ctx.AppIfConfigured("caracal_sts")
	if err != nil {
		return nil
	}
	return v
}

// stsService returns the STS of the caracal_sts app, nil without one.
func stsService(app any) *issuer.Service {
	s, ok := app.(interface{ Service() *issuer.Service })
	if !ok {
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
		h.refuse(w, r, err)
		return nil
	}
	h.metrics.allowed.Inc()

	// Header hygiene: nothing the client sent under X-Caracal-* (or a name an upstream
	// reads as that) survives, in the header or the trailer.
	stripIdentity(r)
	// Canonical keys, assigned directly: Header.Set would canonicalise them per request.
	r.Header["X-Caracal-Sub"] = []string{claims.Subject}
	r.Header["X-Caracal-Client-Id"] = []string{claims.ClientID}
	r.Header["X-Caracal-Zone"] = []string{claims.ZoneID}
	r.Header["X-Caracal-Scope"] = []string{claims.Scope}
	r.Header["X-Caracal-Sid"] = []string{claims.SID}
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

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	g := &guard{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w},
		every:                 int64(h.CheckBytes),
		check:                 func() bool { return h.verifier.Revoked(claims) },
		cancel:                cancel,
	}
	g.self.g = g
	if h.endOnExp {
		// The verifier accepts the mandate until exp plus the leeway; ending the response
		// earlier would cut, at its first byte, a response the request was admitted for.
		g.expires = time.Unix(claims.Expiry, 0).Add(h.leeway).UnixNano()
	}
	sw := &streamWatch{}
	g.arm = func() { sw.start(h, g, claims, ctx) }
	defer func() {
		// Runs when reverse_proxy panics with http.ErrAbortHandler too.
		sw.stop()
		if g.aborted.Load() {
			h.metrics.streamsCut.Inc()
			h.logger.Info("response aborted: mandate revoked or expired", zap.String("zone", claims.ZoneID), zap.String("sid", claims.SID), zap.String("jti", claims.ID))
		}
	}()
	err = next.ServeHTTP(g, r.WithContext(ctx))
	if g.aborted.Load() {
		if g.header {
			// Headers are out: make sure the client cannot take the response as complete.
			panic(http.ErrAbortHandler)
		}
		h.refuse(w, r, &verify.Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "the mandate has been revoked"})
		return nil
	}
	return err
}

// streamWatchDelay is how long a response that turned out to be a stream (no small
// Content-Length, a flush, an upgrade) may run before it is watched. Most such
// responses of an API are over sooner, and watching costs a registration in the
// revocation set, a goroutine and a timer; a stream that lasts is watched from then on,
// and a revocation that arrived in the meantime is found when the watch starts.
const streamWatchDelay = 20 * time.Millisecond

// streamWatch aborts a streaming response as soon as its mandate is revoked or expires,
// even when the response sends nothing. start may run on another goroutine than the
// handler's (reverse_proxy flushes from a timer), hence the lock.
type streamWatch struct {
	mu      sync.Mutex
	stopped bool
	delay   *time.Timer
	expiry  *time.Timer
	release func()
}

// start arms the watch after streamWatchDelay; the guard calls it at most once.
func (sw *streamWatch) start(h *Handler, g *guard, claims *mandate.Claims, ctx context.Context) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.stopped {
		return
	}
	sw.delay = time.AfterFunc(streamWatchDelay, func() {
		sw.mu.Lock()
		defer sw.mu.Unlock()
		if sw.stopped {
			return
		}
		revoked, release := h.verifier.Watch(claims)
		sw.release = release
		go func() {
			select {
			case <-revoked:
				g.abort()
			case <-ctx.Done():
			}
		}()
		if g.expires != 0 {
			sw.expiry = time.AfterFunc(time.Until(time.Unix(0, g.expires)), g.abort)
		}
	})
}

// stop ends the watch when the response is over.
func (sw *streamWatch) stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.stopped = true
	if sw.delay != nil {
		sw.delay.Stop()
	}
	if sw.expiry != nil {
		sw.expiry.Stop()
	}
	if sw.release != nil {
		sw.release()
	}
}

// refuse answers per RFC 6750 and counts the refusal.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	var ve *verify.Error
	if errors.As(err, &ve) {
		h.metrics.refused.WithLabelValues(refusalLabel(ve)).Inc()
		h.logger.Debug("mandate refused", zap.Int("status", ve.Status), zap.String("error", ve.Code), zap.String("reason", ve.Description), zap.String("path", r.URL.Path))
	}
	verify.WriteError(w, h.verifier.Realm(), err)
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
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
