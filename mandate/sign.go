package mandate

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Signer signs mandates with one zone key. It is safe for concurrent use.
type Signer struct {
	priv *ecdsa.PrivateKey
	kid  string
	// The base64url protected header for each typ, encoded once when the signer is built, so
	// the per-token work is the claims, one SHA-256 and one P-256 signature.
	sessionHeader  string
	resourceHeader string
}

// jwsHeader is the protected header of every mandate, in the member order alg, kid, typ.
type jwsHeader struct {
	Alg string `json:"alg"`
	KID string `json:"kid"`
	Typ string `json:"typ"`
}

// es256SigSize is the length of an ES256 signature: R and S as 32-byte big-endian integers (RFC 7518 section 3.4).
const es256SigSize = 64

// NewSigner returns a signer for a P-256 private key; its kid is the key's RFC 7638 thumbprint.
func NewSigner(priv *ecdsa.PrivateKey) (*Signer, error) {
	if priv == nil {
		return nil, errors.New("mandate: nil signing key")
	}
	kid, err := Thumbprint(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("mandate: signing key: %w", err)
	}
	s := &Signer{priv: priv, kid: kid}
	for typ, dst := range map[string]*string{TypSession: &s.sessionHeader, TypResource: &s.resourceHeader} {
		h, err := json.Marshal(jwsHeader{Alg: "ES256", KID: kid, Typ: typ})
		if err != nil {
			return nil, fmt.Errorf("mandate: encoding %s header: %w", typ, err)
		}
		*dst = base64.RawURLEncoding.EncodeToString(h)
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
	header := s.sessionHeader
	if typ == TypResource {
		header = s.resourceHeader
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mandate: encoding claims: %w", err)
	}
	enc := base64.RawURLEncoding
	size := len(header) + 1 + enc.EncodedLen(len(payload)) + 1 + enc.EncodedLen(es256SigSize)
	if size > MaxTokenSize {
		return "", fmt.Errorf("mandate: signed token is %d bytes, more than %d", size, MaxTokenSize)
	}
	// The signing input and the token share one buffer: header.payload, then .signature appended.
	buf := make([]byte, 0, size)
	buf = append(buf, header...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	digest := sha256.Sum256(buf)
	r, sv, err := ecdsa.Sign(rand.Reader, s.priv, digest[:])
	if err != nil {
		return "", fmt.Errorf("mandate: signing: %w", err)
	}
	var sig [es256SigSize]byte
	r.FillBytes(sig[:es256SigSize/2])
	sv.FillBytes(sig[es256SigSize/2:])
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig[:])
	return string(buf), nil
}
