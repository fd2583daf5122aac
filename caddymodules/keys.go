package caddymodules

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

// keyFetchTimeout bounds one request for the issuer's metadata or key set.
const keyFetchTimeout = 5 * time.Second

// remoteKeys builds the key source of a gateway that does not run the zone's STS: the
// keys of jwks_file, or the issuer's JWKS fetched over HTTPS trusting tls_trust_pool
// (the system roots without one). A fetched key set follows the zone's rotations on
// the revocation transport's caracal.keys stream.
func (h *Handler) remoteKeys(ctx caddy.Context) (mandate.KeySource, error) {
	if h.JWKSFile != "" {
		if h.TrustPoolRaw != nil {
			return nil, errors.New("jwks_file and tls_trust_pool exclude each other: a key file is not fetched")
		}
		data, err := os.ReadFile(h.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		set, err := mandate.ParseJWKS(data)
		if err != nil {
			return nil, fmt.Errorf("jwks_file %s: %w", h.JWKSFile, err)
		}
		return set, nil
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if h.TrustPoolRaw != nil {
		mod, err := ctx.LoadModule(h, "TrustPoolRaw")
		if err != nil {
			return nil, fmt.Errorf("tls_trust_pool: %w", err)
		}
		ca, ok := mod.(caddytls.CA)
		if !ok {
			return nil, fmt.Errorf("tls_trust_pool: module %T is not a certificate pool", mod)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: ca.CertPool(), MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{
		Timeout:   keyFetchTimeout,
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	log := h.logger.With(zap.String("issuer", h.Issuer))
	var failing atomic.Bool
	rk, err := mandate.NewRemoteKeys(mandate.RemoteOptions{
		Issuer: h.Issuer,
		Client: client,
		OnFetch: func(err error, retryIn time.Duration) {
			if err == nil {
				h.metrics.keyFetches.WithLabelValues("ok").Inc()
				if failing.Swap(false) {
					log.Info("zone key set fetched again")
				}
				return
			}
			cause := mandate.FetchCause(err)
			h.metrics.keyFetches.WithLabelValues(cause).Inc()
			failing.Store(true)
			log.Warn("fetching the zone key set failed; keeping the last good set",
				zap.String("cause", cause), zap.Duration("retry_in", retryIn), zap.Error(err))
		},
	})
	if err != nil {
		return nil, err
	}
	zoneID, err := verify.ZoneFromIssuer(h.Issuer)
	if err != nil {
		return nil, err
	}
	if h.pipeline.Keys != nil {
		h.stopKeys = h.pipeline.Keys.Subscribe(zoneID, func(e revocation.KeysEvent) {
			log.Info("zone key change on the revocation stream", zap.String("event", e.Event), zap.String("kid", e.KID), zap.Strings("revoked_kids", e.Revoked))
			if e.Event == revocation.KeysRevoke {
				rk.Revoke(e.Revoked...)
				return
			}
			rk.Refetch()
		})
	}
	h.remote = rk
	// Fetch now rather than at the first request: a gateway started before its STS logs
	// why it has no keys, and has them as soon as the STS answers. The context ends with
	// this configuration.
	go rk.Prefetch(ctx)
	return rk, nil
}
