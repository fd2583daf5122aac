package mandate

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
)

// b64 is the unpadded base64url alphabet of JOSE, strict so that one value has one encoding.
var b64 = base64.RawURLEncoding.Strict()

// GenerateKey returns a new P-256 signing key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating p-256 key: %w", err)
	}
	return k, nil
}

// p256Point returns the uncompressed encoding of a P-256 public key, rejecting other curves and
// points that are not on the curve.
func p256Point(pub *ecdsa.PublicKey) ([]byte, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, errors.New("mandate: key is not a p-256 public key")
	}
	b, err := pub.Bytes()
	if err != nil {
		return nil, fmt.Errorf("mandate: invalid p-256 public key: %w", err)
	}
	return b, nil
}

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of the key's JWK, base64url without padding.
// It is the kid of every key Caracal publishes, so a kid names exactly one key.
func Thumbprint(pub *ecdsa.PublicKey) (string, error) {
	if _, err := p256Point(pub); err != nil {
		return "", err
	}
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("mandate: computing thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// JWK is the public JSON Web Key of a zone signing key as published in the zone's JWKS.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	KID string `json:"kid"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// JWKS is a JSON Web Key Set document.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// PublicJWK returns the JWK of a P-256 public key with use sig, alg ES256 and its thumbprint as kid.
func PublicJWK(pub *ecdsa.PublicKey) (JWK, error) {
	point, err := p256Point(pub)
	if err != nil {
		return JWK{}, err
	}
	kid, err := Thumbprint(pub)
	if err != nil {
		return JWK{}, err
	}
	// The uncompressed point is 0x04 || X || Y with both coordinates padded to 32 bytes, which is
	// exactly the fixed-length form RFC 7518 section 6.2.1 requires.
	return JWK{
		Kty: "EC",
		Crv: "P-256",
		Use: "sig",
		Alg: "ES256",
		KID: kid,
		X:   base64.RawURLEncoding.EncodeToString(point[1:33]),
		Y:   base64.RawURLEncoding.EncodeToString(point[33:]),
	}, nil
}

// KeySource resolves a kid to a zone's public verification key. Implementations return an error
// matching ErrUnknownKey when the kid is not one of the zone's keys.
type KeySource interface {
	Key(ctx context.Context, kid string) (*ecdsa.PublicKey, error)
}

// KeySet is a fixed set of verification keys by kid.
type KeySet map[string]*ecdsa.PublicKey

// Key returns the key with the given kid, or ErrUnknownKey.
func (s KeySet) Key(_ context.Context, kid string) (*ecdsa.PublicKey, error) {
	if k, ok := s[kid]; ok && k != nil {
		return k, nil
	}
	return nil, ErrUnknownKey
}

// privateMembers are the JWK members that carry private or symmetric key material (RFC 7518
// section 6). A published key set holding any of them is a leak, not a key set.
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// ParseJWKS parses a JWKS document and keeps the keys a Caracal verifier may use: kty EC, crv P-256,
// alg ES256 or absent, use sig or absent, with a kid. Other keys are skipped. The whole document is
// rejected when it is not strict JSON (duplicate members included), when any key carries private
// material, when a kept key is not a valid point on the curve, when two keys share a kid, or when
// no key is left.
func ParseJWKS(data []byte) (KeySet, error) {
	var doc struct {
		Keys []map[string]josejson.RawMessage `json:"keys"`
	}
	if err := josejson.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("mandate: parsing jwks: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New("mandate: jwks has no keys member")
	}
	set := KeySet{}
	kids := map[string]bool{}
	for i, members := range doc.Keys {
		for _, m := range privateMembers {
			if _, ok := members[m]; ok {
				return nil, fmt.Errorf("mandate: jwks key %d carries private member %q", i, m)
			}
		}
		var k JWK
		for name, dst := range map[string]*string{"kty": &k.Kty, "crv": &k.Crv, "use": &k.Use, "alg": &k.Alg, "kid": &k.KID, "x": &k.X, "y": &k.Y} {
			raw, ok := members[name]
			if !ok {
				continue
			}
			if err := josejson.Unmarshal(raw, dst); err != nil {
				return nil, fmt.Errorf("mandate: jwks key %d: member %q is not a string", i, name)
			}
		}
		if k.KID != "" {
			if kids[k.KID] {
				return nil, fmt.Errorf("mandate: jwks has two keys with kid %q", k.KID)
			}
			kids[k.KID] = true
		}
		if k.Kty != "EC" || k.Crv != "P-256" || (k.Alg != "" && k.Alg != "ES256") || (k.Use != "" && k.Use != "sig") || k.KID == "" {
			continue
		}
		pub, err := parseP256(k.X, k.Y)
		if err != nil {
			return nil, fmt.Errorf("mandate: jwks key %q: %w", k.KID, err)
		}
		set[k.KID] = pub
	}
	if len(set) == 0 {
		return nil, errors.New("mandate: jwks holds no usable es256 key")
	}
	return set, nil
}

// parseP256 decodes fixed-length base64url coordinates into a public key that is on the curve.
func parseP256(x, y string) (*ecdsa.PublicKey, error) {
	xb, err := b64.DecodeString(x)
	if err != nil || len(xb) != 32 {
		return nil, errors.New("x is not a 32-byte base64url coordinate")
	}
	yb, err := b64.DecodeString(y)
	if err != nil || len(yb) != 32 {
		return nil, errors.New("y is not a 32-byte base64url coordinate")
	}
	point := make([]byte, 0, 65)
	point = append(point, 4)
	point = append(point, xb...)
	point = append(point, yb...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("point is not on p-256: %w", err)
	}
	return pub, nil
}
