// Package control is the Coordinator core (docs/protocol.md sections 4 and 5): the admin API for
// zones, admin tokens, applications, resources, policy bundles, signing keys and
// sessions, and the delegation graph that sessions build with their own mandates. It
// has no Caddy imports; the coordinator package wraps it as a Caddy app and handler.
//
// Every change is written through store.Store (the graph changes, epoch bumps and
// outbox rows in one transaction), audited, and announced to the outbox relay through
// Options.Notify so that revocations propagate at once.
package control

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/cache"
	"github.com/caracalgw/caracal/internal/httproute"
	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// minBootstrapTokenLen keeps a configured bootstrap token out of guessing range.
const minBootstrapTokenLen = 16

// Options configures a Service.
type Options struct {
	// Store is where everything lives. Required.
	Store store.Store
	// STS creates zones with their first key, rotates keys, drops its cached view of a
	// zone after a change here, names zone issuers and resolves zone keys in process.
	// Required.
	STS *issuer.Service
	// BootstrapToken is the global write admin token from configuration; empty
	// disables it. It must be at least 16 characters of RFC 6750 b64token syntax and
	// not look like a JWT (admin tokens and mandates are told apart by shape).
	BootstrapToken string
	// Notify is called after every write that produced outbox rows, so the relay
	// publishes at once instead of at its next poll. Optional.
	Notify func()
	// Leeway is the clock skew tolerated on the exp, nbf and iat of session mandates,
	// the STS's leeway: mandate.DefaultLeeway when zero or negative, as the STS applies it.
	Leeway time.Duration
	// Logger receives request outcomes and storage failures; zap.NewNop when nil.
	Logger *zap.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service serves the Coordinator API. It is safe for concurrent use.
type Service struct {
	store     store.Store
	sts       *issuer.Service
	bootstrap *[sha256.Size]byte // nil when no bootstrap token is configured
	notify    func()
	leeway    time.Duration
	log       *zap.Logger
	now       func() time.Time
	router    *httproute.Router

	mu        sync.Mutex                                    // serialises building a zone's verifier
	verifiers *cache.Cache[string, *mandate.CachedVerifier] // by zone
}

// New validates o and returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil {
		return nil, errors.New("coordinator: a store is required")
	}
	if o.STS == nil {
		return nil, errors.New("coordinator: the STS service is required")
	}
	s := &Service{
		store:     o.Store,
		sts:       o.STS,
		notify:    o.Notify,
		leeway:    o.Leeway,
		log:       o.Logger,
		now:       o.Now,
		verifiers: cache.New[string, *mandate.CachedVerifier](maxVerifierZones, 0, nil),
	}
	if o.BootstrapToken != "" {
		if err := checkBootstrapToken(o.BootstrapToken); err != nil {
			return nil, err
		}
		h := sha256.Sum256([]byte(o.BootstrapToken))
		s.bootstrap = &h
	}
	if s.notify == nil {
		s.notify = func() {}
	}
	if s.leeway <= 0 {
		s.leeway = mandate.DefaultLeeway
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.router = s.mux()
	return s, nil
}

func checkBootstrapToken(tok string) error {
	if len(tok) < minBootstrapTokenLen {
		return fmt.Errorf("coordinator: the bootstrap admin token must be at least %d characters", minBootstrapTokenLen)
	}
	if looksLikeJWT(tok) {
		return errors.New("coordinator: the bootstrap admin token must not contain two dots (it would be taken for a mandate)")
	}
	body := strings.TrimRight(tok, "=")
	if body == "" {
		return errors.New("coordinator: the bootstrap admin token must not be only padding")
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return errors.New("coordinator: the bootstrap admin token must use only letters, digits and -._~+/ (RFC 6750 b64token)")
		}
	}
	return nil
}

// mux builds the router of the admin API: a wrong method on one of its endpoints is 405
// with Allow, any other path 404.
func (s *Service) mux() *httproute.Router {
	table := []httproute.Route{
		{Method: http.MethodPost, Pattern: "/v1/zones", Handler: s.createZone},
		{Method: http.MethodPost, Pattern: "/v1/admin-tokens", Handler: s.createAdminToken},
		{Method: http.MethodPost, Pattern: "/v1/admin-tokens/{id}/revoke", Handler: s.revokeAdminToken},
		{Method: http.MethodPost, Pattern: "/v1/zones/{zone}/applications", Handler: s.createApplication},
		{Method: http.MethodPost, Pattern: "/v1/zones/{zone}/resources", Handler: s.createResource},
		{Method: http.MethodPut, Pattern: "/v1/zones/{zone}/policy", Handler: s.putPolicy},
		{Method: http.MethodPost, Pattern: "/v1/zones/{zone}/keys/rotate", Handler: s.rotateKey},
		{Method: http.MethodGet, Pattern: "/v1/zones/{zone}/keys", Handler: s.listKeys},
		{Method: http.MethodPost, Pattern: "/v1/zones/{zone}/sessions/{sid}/revoke", Handler: s.revokeSession},
		{Method: http.MethodGet, Pattern: "/v1/zones/{zone}/sessions/{sid}", Handler: s.getSession},
		{Method: http.MethodPost, Pattern: "/v1/zones/{zone}/delegations", Handler: s.createDelegation},
		{Method: http.MethodPost, Pattern: "/v1/zones/{zone}/delegations/{id}/revoke", Handler: s.revokeDelegation},
		{Method: http.MethodGet, Pattern: "/v1/zones/{zone}/delegations/{id}", Handler: s.getDelegation},
		{Method: http.MethodGet, Pattern: "/v1/zones/{zone}/epoch", Handler: s.getEpoch},
	}
	return httproute.New(table,
		func(w http.ResponseWriter, allow string) {
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Code: codeInvalidRequest, Description: "method not allowed; use " + allow})
		},
		func(w http.ResponseWriter) { writeError(w, notFound("no such endpoint")) })
}

// Handles reports whether the request's path belongs to the Coordinator: /v1 and
// everything under it, whatever the method. ServeHTTP answers the unknown paths and
// wrong methods among them (404, 405) itself, so they never reach the next handler.
func (s *Service) Handles(r *http.Request) bool {
	return httproute.Under(r.URL.Path, "/v1")
}

// ServeHTTP serves the admin API: a wrong method on one of its endpoints is 405 with
// Allow, any other path 404.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// SweepExpired marks every zone's active edges whose expiry has passed as expired (each
// zone's epoch bumps and its outbox rows are written in one transaction), applies the
// new epochs in this process at once and, when anything expired, waits (within the
// STS's bound) for the relay to publish. A failing zone does not stop the others.
func (s *Service) SweepExpired(ctx context.Context) error {
	zones, err := s.store.ListZones(ctx)
	if err != nil {
		return fmt.Errorf("sweeping expired edges: listing zones: %w", err)
	}
	now := s.now()
	var errs []error
	expired := 0
	for _, z := range zones {
		edges, epoch, err := s.store.ExpireEdges(ctx, z.ID, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("zone %s: %w", z.ID, err))
			continue
		}
		if len(edges) > 0 {
			expired += len(edges)
			s.sts.ApplyExpiry(z.ID, edges, epoch)
			s.log.Info("delegation edges expired", zap.String("zone", z.ID), zap.Int("edges", len(edges)), zap.Int64("epoch", epoch))
		}
	}
	if expired > 0 {
		s.notify()
		s.sts.AwaitPublication(ctx, "", "expired delegation edges")
	}
	if len(errs) > 0 {
		return fmt.Errorf("sweeping expired edges: %w", errors.Join(errs...))
	}
	return nil
}

// audit records a successful write. The change is already durable when this runs, so
// a failure is logged rather than turned into an error answer the client would retry.
func (s *Service) audit(ctx context.Context, c *caller, zoneID, action, subject string, detail any) {
	var raw json.RawMessage
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			s.log.Error("encoding audit detail", zap.String("action", action), zap.Error(err))
		}
		raw = b
	}
	e := store.AuditEvent{ZoneID: zoneID, At: s.now(), Actor: c.id, Action: action, Subject: subject, Detail: raw}
	if err := s.store.AppendAudit(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit event not recorded", zap.String("zone", zoneID), zap.String("action", action),
			zap.String("actor", c.id), zap.String("subject", subject), zap.Error(err))
		return
	}
	s.log.Info(action, zap.String("zone", zoneID), zap.String("actor", c.id), zap.String("subject", subject))
}

// timestamp formats a time for responses (RFC 3339, UTC).
func timestamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}
