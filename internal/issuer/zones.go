package issuer

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caracalgw/caracal/internal/keys"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

// CreateZone creates a zone together with its first signing key.
func (s *Service) CreateZone(ctx context.Context, zoneID, name string) error {
	if !mandate.ValidZoneID(zoneID) {
		return fmt.Errorf("zone id %q does not match %s", zoneID, mandate.ZoneIDSyntax)
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

// Rotation is the outcome of RotateKey.
type Rotation struct {
	// KID is the new key, published in the JWKS at once.
	KID string
	// ActivatesAt is when the new key starts signing: now plus the key activation delay,
	// or now for an immediate rotation.
	ActivatesAt time.Time
	// Revoked are the kids an immediate rotation revoked (the signing key, and a next key
	// that had not started signing).
	Revoked []string
}

// RotateKey publishes a new signing key for the zone. By default the current key keeps
// signing for the key activation delay, long enough for every verifier to have fetched
// the new key; the retired key then stays in the JWKS until every mandate it can have
// signed has expired. An immediate rotation, for a compromised key, signs with the new
// key at once and revokes the signing key: it leaves the JWKS, and a caracal.keys entry
// makes verifiers refuse it within the revocation propagation bound. A second delayed
// rotation while one is pending fails with store.ErrConflict.
func (s *Service) RotateKey(ctx context.Context, zoneID string, immediate bool) (Rotation, error) {
	now := s.now()
	key, err := s.newKey(zoneID)
	if err != nil {
		return Rotation{}, err
	}
	key.CreatedAt = now
	rot := Rotation{KID: key.KID, ActivatesAt: now}
	event := revocation.KeysEvent{ZoneID: zoneID, Event: revocation.KeysRotate, KID: key.KID}
	if immediate {
		current, err := s.store.SigningKeys(ctx, zoneID, now)
		if err != nil {
			return Rotation{}, fmt.Errorf("rotating signing key of zone %s: %w", zoneID, err)
		}
		signing, _ := store.SigningKeyAt(current, now)
		rot.Revoked = append(rot.Revoked, signing.KID)
		for _, k := range current {
			if k.Status == store.StatusActive && k.KID != signing.KID {
				rot.Revoked = append(rot.Revoked, k.KID)
			}
		}
		event.Event, event.Revoked, event.ExpiresAt = revocation.KeysRevoke, rot.Revoked, now.Add(s.KeyRetention())
	} else {
		rot.ActivatesAt = now.Add(s.opts.KeyActivationDelay)
	}
	event.ActivatesAt = rot.ActivatesAt
	r := store.KeyRotation{
		Now:         now,
		ActivateAt:  rot.ActivatesAt,
		RetireUntil: rot.ActivatesAt.Add(s.KeyRetention()),
		Revoke:      immediate,
		Outbox:      &store.OutboxEvent{ZoneID: zoneID, Stream: revocation.StreamKeys, Fields: event.Fields(), CreatedAt: now},
	}
	if err := s.store.RotateSigningKey(ctx, zoneID, key, r); err != nil {
		return Rotation{}, fmt.Errorf("rotating signing key of zone %s: %w", zoneID, err)
	}
	s.Invalidate(zoneID)
	if s.opts.Revoked != nil {
		// The caracal.keys entry goes out with the next relay pass; wake it now.
		s.opts.Revoked()
	}
	return rot, nil
}

// KeyGeneration implements mandate.KeyGenerations for the in-process key source.
func (k zoneKeys) KeyGeneration() uint64 { return k.s.keyGen.Load() }

// SigningKeyStatus describes one published key of a zone.
type SigningKeyStatus struct {
	KID string
	// State is next (published, not signing yet), signing, or retired (published for
	// the mandates it signed, until NotAfter).
	State       string
	ActivatesAt time.Time
	RetiredAt   time.Time
	NotAfter    time.Time
}

// KeyStates lists the zone's published keys and what each is for at this instant.
func (s *Service) KeyStates(ctx context.Context, zoneID string) ([]SigningKeyStatus, error) {
	now := s.now()
	keys, err := s.store.SigningKeys(ctx, zoneID, now)
	if err != nil {
		return nil, err
	}
	signing, _ := store.SigningKeyAt(keys, now)
	out := make([]SigningKeyStatus, 0, len(keys))
	for _, k := range keys {
		st := SigningKeyStatus{KID: k.KID, State: "retired", ActivatesAt: k.ActivatesAt, RetiredAt: k.RetiredAt, NotAfter: k.NotAfter}
		switch {
		case k.KID == signing.KID:
			st.State = "signing"
		case k.Status == store.StatusActive:
			st.State = "next"
		}
		if st.ActivatesAt.IsZero() {
			st.ActivatesAt = k.CreatedAt
		}
		out = append(out, st)
	}
	return out, nil
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
