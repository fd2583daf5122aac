package caddymodules

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/sync/singleflight"

	"github.com/caracalgw/caracal/internal/cache"
	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/verify"
)

// ExchangeConfig turns on exchange mode: the route accepts a session mandate and obtains
// (and caches) a resource mandate for its own resource from the STS.
type ExchangeConfig struct {
	// TokenEndpoint is the STS token endpoint used when the STS does not run in this
	// process (default {issuer}/oauth2/token).
	TokenEndpoint string `json:"token_endpoint,omitempty"`
	// RenewBefore renews a cached resource mandate this long before it expires
	// (default 30s).
	RenewBefore caddy.Duration `json:"renew_before,omitempty"`
}

// localSTS is what the gateway uses of an STS running in the same process: the zone of
// an issuer, the zone's keys, and the token exchange itself.
type localSTS interface {
	ZoneOf(issuer string) (zoneID string, ok bool)
	Keys(zoneID string) mandate.KeySource
	Exchange(ctx context.Context, req issuer.ExchangeRequest) (*issuer.Issued, error)
}

// exchanger obtains and caches resource mandates for session mandates.
type exchanger struct {
	local    localSTS
	zoneID   string
	endpoint string
	resource string
	scopes   []string
	renew    time.Duration
	client   *http.Client

	cache  *cache.Cache[[sha256.Size]byte, exchanged]
	flight singleflight.Group // one exchange at a time per session mandate
}

type exchanged struct {
	token string
	exp   time.Time
}

const maxExchangeCache = 10_000

func newExchanger(cfg *ExchangeConfig, iss, resource string, scopes []string, local localSTS, zoneID string) (*exchanger, error) {
	x := &exchanger{
		zoneID:   zoneID,
		endpoint: cfg.TokenEndpoint,
		resource: resource,
		scopes:   scopes,
		renew:    time.Duration(cfg.RenewBefore),
		cache:    cache.New[[sha256.Size]byte, exchanged](maxExchangeCache, 0, nil),
		client: &http.Client{
			Timeout:       5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if x.renew <= 0 {
		x.renew = 30 * time.Second
	}
	if local != nil {
		if z, ok := local.ZoneOf(iss); ok && z == zoneID && cfg.TokenEndpoint == "" {
			x.local = local
		}
	}
	if x.local == nil && x.endpoint == "" {
		x.endpoint = strings.TrimRight(iss, "/") + "/oauth2/token"
	}
	if x.local == nil {
		u, err := url.Parse(x.endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("exchange: token endpoint %q is not an http(s) URL", x.endpoint)
		}
	}
	return x, nil
}

// resourceMandate returns the verified claims and token of a resource mandate for the
// presented session mandate, from the cache while it is fresh. The cached mandate is
// verified on every request like any presented one, so revocation applies at once.
func (x *exchanger) resourceMandate(ctx context.Context, session string, v *verify.Verifier) (*mandate.Claims, string, error) {
	if len(session) > mandate.MaxTokenSize {
		return nil, "", &verify.Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "token too large"}
	}
	key := sha256.Sum256([]byte(session))
	e, ok := x.cache.Get(key)
	if !ok || time.Until(e.exp) < x.renew {
		// Requests with the same session mandate that miss together share one exchange;
		// it runs on its own deadline, so that one client leaving does not fail the others.
		res, err, _ := x.flight.Do(string(key[:]), func() (any, error) {
			// A caller that missed the cache just before an earlier flight stored its
			// result starts a flight of its own; it finds that result here.
			if e, ok := x.cache.Get(key); ok && time.Until(e.exp) >= x.renew {
				return e, nil
			}
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exchangeTimeout)
			defer cancel()
			tok, exp, err := x.exchange(ctx, session)
			if err != nil {
				return nil, err
			}
			e := exchanged{token: tok, exp: exp}
			x.cache.SetUntil(key, e, exp)
			return e, nil
		})
		if err != nil {
			return nil, "", err
		}
		e = res.(exchanged)
	}
	c, err := v.Verify(ctx, e.token)
	if err != nil {
		x.cache.Delete(key)
		return nil, "", err
	}
	return c, e.token, nil
}

// exchangeTimeout bounds one exchange, in process or over HTTP.
const exchangeTimeout = 5 * time.Second

// exchange asks the STS, in process or over HTTP, and maps its OAuth error to the
// gateway's RFC 6750 answer.
func (x *exchanger) exchange(ctx context.Context, session string) (string, time.Time, error) {
	if x.local != nil {
		req := issuer.ExchangeRequest{
			ZoneID:           x.zoneID,
			SubjectToken:     session,
			SubjectTokenType: issuer.TokenTypeAccessToken,
			Resources:        []string{x.resource},
		}
		if len(x.scopes) > 0 {
			req.Scopes = x.scopes
		}
		issued, err := x.local.Exchange(ctx, req)
		if err != nil {
			var e *issuer.Error
			if !errors.As(err, &e) {
				return "", time.Time{}, &verify.Error{Status: http.StatusServiceUnavailable, Description: "token exchange failed"}
			}
			return "", time.Time{}, exchangeRefusal(e.Status, e.Code, e.Description)
		}
		return issued.Token, issued.Expires, nil
	}
	form := url.Values{
		"grant_type":         {issuer.GrantTokenExchange},
		"subject_token":      {session},
		"subject_token_type": {issuer.TokenTypeAccessToken},
		"resource":           {x.resource},
	}
	if len(x.scopes) > 0 {
		form.Set("scope", strings.Join(x.scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := x.client.Do(req)
	if err != nil {
		return "", time.Time{}, &verify.Error{Status: http.StatusServiceUnavailable, Description: "the STS could not be reached"}
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return "", time.Time{}, &verify.Error{Status: http.StatusServiceUnavailable, Description: "the STS answered with a malformed body"}
	}
	if resp.StatusCode != http.StatusOK {
		return "", time.Time{}, exchangeRefusal(resp.StatusCode, body.Error, body.Description)
	}
	if body.AccessToken == "" || body.ExpiresIn <= 0 {
		return "", time.Time{}, &verify.Error{Status: http.StatusServiceUnavailable, Description: "the STS answered without a mandate"}
	}
	return body.AccessToken, time.Now().Add(time.Duration(body.ExpiresIn) * time.Second), nil
}

// exchangeRefusal maps an STS error to the gateway's answer: a refused subject token is
// an invalid token, a policy or scope refusal is insufficient_scope, an unavailable STS
// is 503, and so is a refusal without an error code, which says nothing about the
// token (like any other malformed STS answer).
func exchangeRefusal(status int, code, desc string) error {
	switch {
	case status >= 500 || status == http.StatusTooManyRequests:
		return &verify.Error{Status: http.StatusServiceUnavailable, Description: "the STS is unavailable"}
	case code == issuer.CodeAccessDenied || code == issuer.CodeInvalidScope:
		return &verify.Error{Status: http.StatusForbidden, Code: "insufficient_scope", Description: "exchange refused: " + desc}
	case code == "":
		return &verify.Error{Status: http.StatusServiceUnavailable, Description: "the STS refused without an error code"}
	default:
		return &verify.Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "exchange refused: " + desc}
	}
}
