package issuer

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"strings"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// ZoneOf returns the zone id when issuer is a zone issuer of this STS.
func (s *Service) ZoneOf(issuer string) (string, bool) {
	zoneID, ok := strings.CutPrefix(issuer, s.base+"/zones/")
	if !ok || !mandate.ValidZoneID(zoneID) {
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
