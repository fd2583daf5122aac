// Package issuer is the STS core: zone signing keys, JWKS and metadata, client-credentials
// sessions and policy-gated RFC 8693 token exchange (docs/protocol.md sections 2, 3 and 8). It has
// no Caddy imports; the sts package wraps it as a Caddy app and handler.
package issuer

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/caracalgw/caracal/internal/httproute"
	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/secret"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

// Defaults of docs/protocol.md sections 2 and 3.
const (
	DefaultSessionLifetime    = time.Hour
	DefaultMaxSessionLifetime = 24 * time.Hour
	DefaultMandateLifetime    = 5 * time.Minute
	MaxMandateLifetime        = 15 * time.Minute
	DefaultRefreshInterval    = 5 * time.Second
	DefaultFailureLimit       = 5
	DefaultFailureWindow      = time.Minute
	jwksMaxAge                = 300
	// DefaultKeyActivationDelay is how long a rotated-in key is published before it
	// signs: the JWKS max-age (300 s), plus the 30 s a verifier waits before refetching
	// for an unknown kid (mandate.DefaultRemoteMinRefresh), plus 30 s for clocks and
	// fetches in flight.
	DefaultKeyActivationDelay = jwksMaxAge*time.Second + mandate.DefaultRemoteMinRefresh + 30*time.Second
)

// Token type and grant URNs.
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	GrantClientCreds     = "client_credentials"
	GrantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// Options configures a Service. Zero values take the defaults above.
type Options struct {
	// BaseURL is the STS's external URL; zone issuers are BaseURL/zones/{zone}.
	BaseURL string
	Store   store.Store
	Policy  policy.Engine
	// Compiler compiles uploaded and bootstrapped bundles (nil: one with the default
	// limits); share the policy engine's, so that one pool bounds all compilations.
	Compiler *policy.Compiler
	// KEK is the 32-byte key-encryption key sealing zone private keys.
	KEK []byte

	SessionLifetime    time.Duration
	MaxSessionLifetime time.Duration
	MandateLifetime    time.Duration
	// Leeway is the clock skew tolerated on the exp, nbf and iat of subject tokens
	// (mandate.DefaultLeeway when zero or negative).
	Leeway time.Duration
	// KeyActivationDelay is how long a rotation publishes the next key before signing
	// with it (default DefaultKeyActivationDelay). Shorter than the JWKS max-age plus
	// the verifiers' refetch interval, verifiers may refuse the first mandates it signs.
	KeyActivationDelay time.Duration
	// RefreshInterval bounds how stale this process's view of a zone's keys, policy version
	// and resources may be when another process changed them.
	RefreshInterval time.Duration
	// FailureLimit failed authentications of one client id from one source address per
	// FailureWindow lock that pair out (slow_down). SourceFailureLimit (default 4×FailureLimit)
	// failures from one source address for any client ids of a zone, unknown ids included, lock
	// out the source in that zone; ClientFailureLimit (default 20×FailureLimit) failures of one
	// client id from all sources lock out the client. A secret verified within the verifier's
	// cache TTL is accepted even while locked out.
	FailureLimit       int
	SourceFailureLimit int
	ClientFailureLimit int
	FailureWindow      time.Duration
	Secrets            *secret.Verifier
	// ClientIP returns the source address of a request that lockouts and the Argon2 queue are
	// keyed by; nil means the host of RemoteAddr.
	ClientIP func(*http.Request) string
	// Revoked is called after a revocation was stored (its outbox rows included), so
	// the relay can publish at once instead of at its next poll.
	Revoked func()
	// Published waits until every outbox row committed before the call has been
	// published, or ctx ends (the outbox relay's Flush). A revoke's answer waits for it
	// at most PublishWait (DefaultPublishWait when 0); see AwaitPublication. Optional.
	Published   func(ctx context.Context) error
	PublishWait time.Duration
	// Revocations and RevocationSource are this process's revocation set and its feed.
	// With them, sessions are read from storage once and then checked against the set
	// while the feed is no older than MaxStaleness (default 5s); without them every
	// exchange reads the session from storage.
	Revocations      *revocation.RevokedSet
	RevocationSource revocation.Source
	MaxStaleness     time.Duration
	// Epochs are the zones' delegation epochs seen on the same feed; a delegation path
	// served from the cache is stamped with them (see pathEpoch).
	Epochs *revocation.Epochs

	Logger *zap.Logger
	Now    func() time.Time
}

// Service is the STS. It is safe for concurrent use.
type Service struct {
	opts     Options
	base     string
	store    store.Store
	policy   policy.Engine
	secrets  *secret.Verifier
	throttle *throttle
	log      *zap.Logger
	now      func() time.Time
	router   *httproute.Router
	state    *stateCache

	mu        sync.RWMutex
	zones     map[string]*zoneState
	zoneLoads singleflight.Group // first loads of a zone, by zone id
	// keyGen changes whenever a zone's key set lost a key or was loaded afresh, so that
	// verification caches over the zones' keys check their tokens again.
	keyGen atomic.Uint64
}

// zoneState is this process's cached view of one zone.
type zoneState struct {
	refreshing sync.Mutex // held by the goroutine refreshing this zone
	mu         sync.RWMutex
	loadedAt   time.Time
	// switchAt is when a published next key starts signing (zero: none pending); the
	// state is reloaded then, whatever its age.
	switchAt  time.Time
	issuer    string
	signer    *mandate.Signer
	keys      mandate.KeySet
	jwks      []byte
	resources map[string]resourceEntry
	// scopes is the union of the zone's grantable scopes (RFC 8414 scopes_supported).
	scopes []string
	// subjects caches verified session mandates; its key source reads keys above.
	subjects *mandate.CachedVerifier
	// keyGen is the Service's count of key withdrawals (mandate.KeyGenerations).
	keyGen *atomic.Uint64
}

// KeyGeneration implements mandate.KeyGenerations.
func (z *zoneState) KeyGeneration() uint64 { return z.keyGen.Load() }

// Key implements mandate.KeySource over the zone's current key set.
func (z *zoneState) Key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	z.mu.RLock()
	keys := z.keys
	z.mu.RUnlock()
	return keys.Key(ctx, kid)
}

type resourceEntry struct {
	res     store.Resource
	fetched time.Time
}

// New validates opts and returns a Service.
func New(opts Options) (*Service, error) {
	if opts.Store == nil {
		return nil, errors.New("issuer: a store is required")
	}
	if opts.Policy == nil {
		return nil, errors.New("issuer: a policy engine is required")
	}
	if len(opts.KEK) != 32 {
		return nil, errors.New("issuer: the key-encryption key must be 32 bytes")
	}
	base := strings.TrimRight(opts.BaseURL, "/")
	if !strings.HasPrefix(base, "https://") && !strings.HasPrefix(base, "http://") {
		return nil, fmt.Errorf("issuer: base_url must be an absolute http(s) URL, got %q", opts.BaseURL)
	}
	if opts.SessionLifetime <= 0 {
		opts.SessionLifetime = DefaultSessionLifetime
	}
	if opts.MaxSessionLifetime <= 0 {
		opts.MaxSessionLifetime = DefaultMaxSessionLifetime
	}
	if opts.SessionLifetime > opts.MaxSessionLifetime {
		return nil, fmt.Errorf("issuer: session lifetime %s exceeds the cap %s", opts.SessionLifetime, opts.MaxSessionLifetime)
	}
	if opts.MandateLifetime <= 0 {
		opts.MandateLifetime = DefaultMandateLifetime
	}
	if opts.MandateLifetime > MaxMandateLifetime {
		return nil, fmt.Errorf("issuer: mandate lifetime %s exceeds the cap %s", opts.MandateLifetime, MaxMandateLifetime)
	}
	if opts.Leeway <= 0 {
		opts.Leeway = mandate.DefaultLeeway
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.KeyActivationDelay <= 0 {
		opts.KeyActivationDelay = DefaultKeyActivationDelay
	}
	if opts.FailureLimit <= 0 {
		opts.FailureLimit = DefaultFailureLimit
	}
	if opts.SourceFailureLimit <= 0 {
		opts.SourceFailureLimit = 4 * opts.FailureLimit
	}
	if opts.ClientFailureLimit <= 0 {
		opts.ClientFailureLimit = 20 * opts.FailureLimit
	}
	if opts.FailureWindow <= 0 {
		opts.FailureWindow = DefaultFailureWindow
	}
	if opts.PublishWait <= 0 {
		opts.PublishWait = DefaultPublishWait
	}
	if opts.Secrets == nil {
		v, err := secret.NewVerifier(secret.VerifierOptions{})
		if err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
		opts.Secrets = v
	}
	if opts.ClientIP == nil {
		opts.ClientIP = remoteHost
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Compiler == nil {
		opts.Compiler = policy.NewCompiler(policy.CompilerOptions{})
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{
		opts:     opts,
		base:     base,
		store:    opts.Store,
		policy:   opts.Policy,
		secrets:  opts.Secrets,
		throttle: newThrottle(opts.FailureWindow, 100_000),
		log:      opts.Logger,
		now:      opts.Now,
		zones:    make(map[string]*zoneState),
	}
	if opts.MaxStaleness <= 0 {
		opts.MaxStaleness = DefaultRefreshInterval
	}
	s.state = newStateCache(opts.Revocations, opts.RevocationSource, opts.MaxStaleness, opts.RefreshInterval)
	s.router = s.routes()
	return s, nil
}

// Issuer returns the zone issuer URL.
func (s *Service) Issuer(zoneID string) string { return mandate.IssuerURL(s.base, zoneID) }

// KeyRetention is how long a retired key must stay in the JWKS: until every mandate it
// signed (sessions included) has expired, plus the verifiers' leeway.
func (s *Service) KeyRetention() time.Duration {
	return max(s.opts.MaxSessionLifetime, MaxMandateLifetime) + s.opts.Leeway
}

// zone returns the cached state of a zone, loading or refreshing it when needed.
// store.ErrNotFound means the zone does not exist.
func (s *Service) zone(ctx context.Context, zoneID string) (*zoneState, error) {
	s.mu.RLock()
	z := s.zones[zoneID]
	s.mu.RUnlock()
	now := s.now()
	if z != nil {
		z.mu.RLock()
		fresh := now.Sub(z.loadedAt) < s.opts.RefreshInterval && (z.switchAt.IsZero() || now.Before(z.switchAt))
		z.mu.RUnlock()
		if fresh {
			return z, nil
		}
		// One goroutine refreshes; the others keep using the previous state.
		if !z.refreshing.TryLock() {
			return z, nil
		}
		defer z.refreshing.Unlock()
		if err := s.load(ctx, z, zoneID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				s.forget(zoneID)
				return nil, err
			}
			s.log.Warn("refreshing zone state failed; keeping the previous state", zap.String("zone", zoneID), zap.Error(err))
		}
		return z, nil
	}
	// Requests for a zone not loaded yet share one load; it runs on a deadline of its own,
	// so that one client leaving does not fail the others.
	res, err, _ := s.zoneLoads.Do(zoneID, func() (any, error) {
		s.mu.RLock()
		existing := s.zones[zoneID]
		s.mu.RUnlock()
		if existing != nil {
			return existing, nil
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), zoneLoadTimeout)
		defer cancel()
		z := &zoneState{issuer: s.Issuer(zoneID), keyGen: &s.keyGen}
		z.subjects = mandate.NewCachedVerifier(&mandate.Verifier{Keys: z, Leeway: s.opts.Leeway, Now: s.now}, 0)
		z.refreshing.Lock()
		defer z.refreshing.Unlock()
		if err := s.load(ctx, z, zoneID); err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.zones[zoneID] = z
		s.mu.Unlock()
		return z, nil
	})
	if err != nil {
		return nil, err
	}
	return res.(*zoneState), nil
}

// zoneLoadTimeout bounds the first load of a zone's state.
const zoneLoadTimeout = 10 * time.Second

// load reads the zone's keys and syncs its policy bundle into the engine.
func (s *Service) load(ctx context.Context, z *zoneState, zoneID string) error {
	now := s.now()
	if _, err := s.store.GetZone(ctx, zoneID); err != nil {
		return err
	}
	keys, err := s.store.SigningKeys(ctx, zoneID, now)
	if err != nil {
		return fmt.Errorf("loading signing keys: %w", err)
	}
	var signer *mandate.Signer
	set := make(mandate.KeySet, len(keys))
	jwks := mandate.JWKS{Keys: make([]mandate.JWK, 0, len(keys))}
	z.mu.RLock()
	current, previous := z.signer, z.keys
	z.mu.RUnlock()
	signing, _ := store.SigningKeyAt(keys, now)
	var switchAt time.Time
	for _, k := range keys {
		if k.Status == store.StatusActive && k.ActivatesAt.After(now) {
			switchAt = k.ActivatesAt
		}
		if k.KID == signing.KID && signer == nil {
			if current != nil && current.KID() == k.KID {
				signer = current
			} else {
				priv, err := openKey(s.opts.KEK, zoneID, k.Sealed)
				if err != nil {
					return fmt.Errorf("opening signing key %s: %w", k.KID, err)
				}
				if signer, err = mandate.NewSigner(priv); err != nil {
					return fmt.Errorf("signing key %s: %w", k.KID, err)
				}
			}
		}
		pub, jwk, err := parsePublicJWK(k.PublicJWK)
		if err != nil {
			return fmt.Errorf("public key %s: %w", k.KID, err)
		}
		set[jwk.KID] = pub
		jwks.Keys = append(jwks.Keys, jwk)
	}
	if signer == nil {
		return fmt.Errorf("zone %s has no active signing key", zoneID)
	}
	jwksBody, err := marshalJSON(jwks)
	if err != nil {
		return err
	}
	// Served as is by serveJWKS; ends its line like every other JSON answer.
	jwksBody = append(jwksBody, '\n')
	scopes, err := s.store.ZoneScopes(ctx, zoneID)
	if err != nil {
		return fmt.Errorf("loading the zone's scopes: %w", err)
	}
	if err := s.syncPolicy(ctx, zoneID); err != nil {
		// The engine leaves the zone deny-all; keys are still served.
		s.log.Warn("policy bundle not loaded; zone is deny-all", zap.String("zone", zoneID), zap.Error(err))
	}
	z.mu.Lock()
	withdrawn := previous == nil // a fresh state: what an earlier one held is unknown
	for kid := range previous {
		if _, ok := set[kid]; !ok {
			withdrawn = true
		}
	}
	if withdrawn {
		// A key may have left the set (revoked, or past its NotAfter): mandates it
		// signed must not be served from a cache any more.
		z.keyGen.Add(1)
	}
	z.loadedAt = now
	z.switchAt = switchAt
	z.signer = signer
	z.keys = set
	z.jwks = jwksBody
	z.scopes = scopes
	z.resources = make(map[string]resourceEntry)
	z.mu.Unlock()
	return nil
}

// syncPolicy hands the zone's active bundle to the engine, which compiles a new
// version in the background (the zone keeps its previous version meanwhile); no
// active bundle removes it, which is deny-all. It never waits for a compilation.
func (s *Service) syncPolicy(ctx context.Context, zoneID string) error {
	b, err := s.store.ActivePolicyBundle(ctx, zoneID)
	if errors.Is(err, store.ErrNotFound) {
		s.policy.Schedule(zoneID, nil)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading active policy bundle: %w", err)
	}
	if v, ok := s.policy.Version(zoneID); ok && v == b.Version {
		return nil
	}
	s.policy.Schedule(zoneID, &b)
	return nil
}

// CompilePolicy checks and compiles a bundle for zoneID in this STS's sandbox, under
// its limits and in its compiler pool (policy.ErrLimit, policy.ErrBusy). The
// Coordinator calls it before storing an upload, then InstallPolicy.
func (s *Service) CompilePolicy(ctx context.Context, zoneID string, modules map[string]string, data json.RawMessage) (*policy.Compiled, error) {
	return s.opts.Compiler.Compile(ctx, zoneID, modules, data)
}

// InstallPolicy makes a bundle compiled by CompilePolicy and stored as version the
// zone's policy in this process at once.
func (s *Service) InstallPolicy(zoneID string, version int64, c *policy.Compiled) {
	s.policy.Install(zoneID, version, c)
}

// Invalidate drops this process's cached view of a zone so that the next request reloads
// keys, policy and resources. The Coordinator calls it after changing the zone in-process.
func (s *Service) Invalidate(zoneID string) { s.forget(zoneID) }

func (s *Service) forget(zoneID string) {
	s.mu.Lock()
	delete(s.zones, zoneID)
	s.mu.Unlock()
}

// resource returns a zone resource, cached for the refresh interval.
func (s *Service) resource(ctx context.Context, z *zoneState, zoneID, identifier string) (store.Resource, error) {
	now := s.now()
	z.mu.RLock()
	e, ok := z.resources[identifier]
	z.mu.RUnlock()
	if ok && now.Sub(e.fetched) < s.opts.RefreshInterval {
		return e.res, nil
	}
	r, err := s.store.GetResource(ctx, zoneID, identifier)
	if err != nil {
		return store.Resource{}, err
	}
	z.mu.Lock()
	if len(z.resources) < 10_000 {
		z.resources[identifier] = resourceEntry{res: r, fetched: now}
	}
	z.mu.Unlock()
	return r, nil
}
