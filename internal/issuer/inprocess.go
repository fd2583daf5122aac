package issuer

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// ZoneOf returns the zone id when issuer is a zone issuer of this STS.
func (s *Service) ZoneOf(issuer string) (string, bool) {
	zoneID, ok := strings.CutPrefix(issuer, s.base+"/zones/")
	if !ok || !ZoneIDPattern.MatchString(zoneID) {
		return "", false
	}
	return zoneID, true
}

// zoneKeys is a zone's key set as a mandate.KeySource, for verifiers in this process.
type zoneKeys struct {
	s      *Service
	zoneID string
}

func (k zoneKeys) Key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	z, err := k.s.zone(ctx, k.zoneID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, mandate.ErrUnknownKey
	}
	if err != nil {
		return nil, err
	}
	return z.Key(ctx, kid)
}

// Keys returns the zone's signing keys as a key source, so a gateway in the same process
// verifies without fetching the JWKS.
func (s *Service) Keys(zoneID string) mandate.KeySource { return zoneKeys{s: s, zoneID: zoneID} }

// Exchange performs a token exchange in process, as if the session mandate had been
// posted to the token endpoint: same checks, same policy, same answer. It returns the
// resource mandate and its expiry, or the OAuth error.
func (s *Service) Exchange(ctx context.Context, zoneID, sessionToken, resource string, scopes []string) (string, time.Time, error) {
	form := url.Values{
		"grant_type":         {GrantTokenExchange},
		"subject_token":      {sessionToken},
		"subject_token_type": {TokenTypeAccessToken},
		"resource":           {resource},
	}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	f, err := parseForm([]byte(form.Encode()))
	if err != nil {
		return "", time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Issuer(zoneID)+"/oauth2/token", nil)
	if err != nil {
		return "", time.Time{}, err
	}
	resp, oerr := s.exchange(ctx, zoneID, req, f)
	if oerr != nil {
		return "", time.Time{}, oerr
	}
	return resp.AccessToken, s.now().Add(time.Duration(resp.ExpiresIn) * time.Second), nil
}

// OAuthError returns the status and error code of an error from Exchange.
func OAuthError(err error) (status int, code, description string, ok bool) {
	var e *oauthError
	if !errors.As(err, &e) {
		return 0, "", "", false
	}
	return e.Status, e.Code, e.Description, true
}
