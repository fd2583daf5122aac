package issuer

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caracalgw/caracal/internal/keys"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// CreateZone creates a zone together with its first signing key.
func (s *Service) CreateZone(ctx context.Context, zoneID, name string) error {
	if !ZoneIDPattern.MatchString(zoneID) {
		return fmt.Errorf("zone id %q does not match %s", zoneID, ZoneIDPattern)
	}
	now := s.now()
	key, err := s.newKey(zoneID)
	if err != nil {
		return err
	}
	key.CreatedAt = now
	if err := s.store.CreateZone(ctx, store.Zone{ID: zoneID, Name: name, CreatedAt: now}, key); err != nil {
		return fmt.Errorf("creating zone %s: %w", zoneID, err)
	}
	return nil
}

// RotateKey makes a new signing key active for the zone. The retired key stays in the
// JWKS until every mandate it can have signed has expired.
func (s *Service) RotateKey(ctx context.Context, zoneID string) (kid string, err error) {
	now := s.now()
	key, err := s.newKey(zoneID)
	if err != nil {
		return "", err
	}
	key.CreatedAt = now
	if err := s.store.RotateSigningKey(ctx, zoneID, key, now, now.Add(s.keyRetention())); err != nil {
		return "", fmt.Errorf("rotating signing key of zone %s: %w", zoneID, err)
	}
	s.Invalidate(zoneID)
	return key.KID, nil
}

func (s *Service) newKey(zoneID string) (store.SigningKey, error) {
	priv, err := mandate.GenerateKey()
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("generating signing key: %w", err)
	}
	jwk, err := mandate.PublicJWK(&priv.PublicKey)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("encoding public key: %w", err)
	}
	pub, err := json.Marshal(jwk)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("encoding public key: %w", err)
	}
	sealed, err := keys.Seal(s.opts.KEK, zoneID, priv)
	if err != nil {
		return store.SigningKey{}, fmt.Errorf("sealing signing key: %w", err)
	}
	return store.SigningKey{ZoneID: zoneID, KID: jwk.KID, Sealed: sealed, PublicJWK: pub, Status: store.StatusActive}, nil
}

func openKey(kek []byte, zoneID string, sealed []byte) (*ecdsa.PrivateKey, error) {
	return keys.Open(kek, zoneID, sealed)
}

// parsePublicJWK decodes a stored public JWK through the same checks as any JWKS.
func parsePublicJWK(raw []byte) (*ecdsa.PublicKey, mandate.JWK, error) {
	var jwk mandate.JWK
	if err := json.Unmarshal(raw, &jwk); err != nil {
		return nil, jwk, fmt.Errorf("decoding jwk: %w", err)
	}
	doc, err := json.Marshal(mandate.JWKS{Keys: []mandate.JWK{jwk}})
	if err != nil {
		return nil, jwk, err
	}
	set, err := mandate.ParseJWKS(doc)
	if err != nil {
		return nil, jwk, err
	}
	pub, ok := set[jwk.KID]
	if !ok {
		return nil, jwk, errors.New("stored jwk was not accepted")
	}
	return pub, jwk, nil
}

func marshalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding json: %w", err)
	}
	return b, nil
}
