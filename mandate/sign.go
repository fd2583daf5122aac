package mandate

import (
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// Signer signs mandates with one zone key. It is safe for concurrent use.
type Signer struct {
	kid string
	// One go-jose signer per typ: go-jose fixes the protected header when the signer is built,
	// which keeps the per-token work to the claims and the signature itself.
	session  jose.Signer
	resource jose.Signer
}

// NewSigner returns a signer for a P-256 private key; its kid is the key's RFC 7638 thumbprint.
func NewSigner(priv *ecdsa.PrivateKey) (*Signer, error) {
	if priv == nil {
		return nil, errors.New("mandate: nil signing key")
	}
	kid, err := Thumbprint(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("mandate: signing key: %w", err)
	}
	s := &Signer{kid: kid}
	for typ, dst := range map[string]*jose.Signer{TypSession: &s.session, TypResource: &s.resource} {
		key := jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}}
		js, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
		if err != nil {
			return nil, fmt.Errorf("mandate: building %s signer: %w", typ, err)
		}
		*dst = js
	}
	return s, nil
}

// KID returns the key id that the signer puts in every header.
func (s *Signer) KID() string { return s.kid }

// Sign returns the compact JWS of the claims with the header {alg: ES256, kid, typ} and nothing else.
// The typ must be TypSession or TypResource and must agree with the use claim, so that a session
// mandate can never be minted with the header of a resource mandate or the other way round.
func (s *Signer) Sign(typ string, c *Claims) (string, error) {
	if c == nil {
		return "", errors.New("mandate: nil claims")
	}
	want, ok := typForUse(c.Use)
	if !ok || want != typ {
		return "", fmt.Errorf("mandate: typ %q does not match use %q", typ, c.Use)
	}
	js := s.session
	if typ == TypResource {
		js = s.resource
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mandate: encoding claims: %w", err)
	}
	obj, err := js.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("mandate: signing: %w", err)
	}
	token, err := obj.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("mandate: serialising: %w", err)
	}
	if len(token) > MaxTokenSize {
		return "", fmt.Errorf("mandate: signed token is %d bytes, more than %d", len(token), MaxTokenSize)
	}
	return token, nil
}
