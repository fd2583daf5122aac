package issuer

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/secret"
	"github.com/caracalgw/caracal/internal/store"
)

// unknownClientsKey is the fair-queue key shared by the unknown client ids of a zone; a known
// client's key is "id:" and its id.
const unknownClientsKey = "unknown"

// throttledError is an attempt refused by the throttle before any work.
type throttledError struct {
	wait  time.Duration
	scope string
}

// lockoutReasons are the error descriptions of a refusal by each counter.
var lockoutReasons = map[string]string{
	scopeClientSource: "too many failed authentications for this client from this address; retry later",
	scopeSource:       "too many failed authentications from this address; retry later",
	scopeClient:       "too many failed authentications for this client; retry later",
}

func (e *throttledError) Error() string { return "too many failed authentications" }

// authenticate verifies client credentials against the zone's application (docs/client-auth.md).
// A secret verified within the cache TTL passes at once. Otherwise the attempt is reserved on the
// (client, source), source and client counters before any Argon2 work, whether the client id
// exists or not, so that the answers do not tell which ids exist; the work then waits its turn in
// the verifier's fair queue under the client id (all unknown ids of a zone share one turn), so a
// flood aimed at one client, or of unknown ids, from any number of addresses delays another client
// of the zone by about one Argon2 run.
func (s *Service) authenticate(ctx context.Context, zoneID string, ca ClientAuth) *Error {
	fail := func() *Error {
		e := newError(http.StatusUnauthorized, CodeInvalidClient, "client authentication failed")
		e.basic = ca.Basic
		return e
	}
	source := ca.Source
	app, err := s.store.GetApplication(ctx, zoneID, ca.ID)
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("client lookup failed", zap.String("zone", zoneID), zap.Error(err))
		return unavailable("client could not be verified")
	}
	if found && !app.Disabled && s.secrets.Cached(zoneID, ca.ID, app.SecretHash, ca.Secret) {
		return nil
	}
	counters := []counter{
		{scope: scopeClientSource, key: "c\x00" + zoneID + "\x00" + ca.ID + "\x00" + source, limit: s.opts.FailureLimit},
		{scope: scopeSource, key: "s\x00" + zoneID + "\x00" + source, limit: s.opts.SourceFailureLimit},
		{scope: scopeClient, key: "g\x00" + zoneID + "\x00" + ca.ID, limit: s.opts.ClientFailureLimit},
	}
	var res *reservation
	admit := func() error {
		rv, wait, c := s.throttle.reserve(counters, s.now())
		if rv == nil {
			return &throttledError{wait: wait, scope: c.scope}
		}
		res = rv
		return nil
	}
	settle := func(o outcome) {
		if res == nil {
			return
		}
		for _, c := range s.throttle.settle(res, o) {
			s.log.Info("client authentication locked out",
				zap.String("zone", zoneID), zap.String("client_id", ca.ID), zap.String("source", source),
				zap.String("scope", c.scope), zap.Int("failures", c.limit), zap.Duration("window", s.opts.FailureWindow))
		}
	}
	var ok bool
	if found {
		ok, err = s.secrets.Verify(ctx, secret.Request{ZoneID: zoneID, ClientID: ca.ID, PHC: app.SecretHash, Secret: ca.Secret, QueueKey: "id:" + ca.ID, Admit: admit})
	} else if err = admit(); err == nil {
		// Spend the same Argon2 cost so that timing does not reveal which ids exist.
		err = s.secrets.DummyCheck(ctx, zoneID, unknownClientsKey, ca.Secret)
	}
	if err != nil {
		var th *throttledError
		switch {
		case errors.As(err, &th):
			e := newError(http.StatusTooManyRequests, CodeSlowDown, lockoutReasons[th.scope])
			e.retryAfter = int((th.wait + time.Second - 1) / time.Second)
			return e
		case errors.Is(err, secret.ErrKeyBusy):
			settle(attemptAborted)
			e := newError(http.StatusTooManyRequests, CodeSlowDown, "too many authentications of this client in progress; retry later")
			e.retryAfter = 1
			return e
		case errors.Is(err, secret.ErrBusy):
			settle(attemptAborted)
			e := unavailable("client authentication is busy; retry later")
			e.retryAfter = 1
			return e
		case ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			settle(attemptAborted)
			return unavailable("client verification was cancelled")
		}
		settle(attemptAborted) // a stored hash that does not parse runs nothing
		s.log.Warn("client secret verification failed", zap.String("zone", zoneID), zap.String("client_id", ca.ID), zap.Error(err))
		return fail()
	}
	if !found || !ok || app.Disabled {
		settle(attemptFailed)
		return fail()
	}
	settle(attemptSucceeded)
	return nil
}

// remoteHost is the host part of the request's RemoteAddr (all of it if it has no port).
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
