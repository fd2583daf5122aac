// Package keys protects zone signing keys at rest: a key-encryption key (KEK) from the operator
// seals each zone's private key with AES-256-GCM, bound to the zone id, before it reaches storage.
package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// sealVersion is the first byte of every sealed key, so that the format can change later.
const sealVersion byte = 1

const (
	// KEKSize is the size of a key-encryption key: AES-256.
	KEKSize   = 32
	nonceSize = 12
	tagSize   = 16
	// adPrefix starts the associated data; the zone id follows it. The NUL ends the prefix so that no
	// zone id can be mistaken for a different prefix.
	adPrefix = "caracal zone key v1\x00"
)

// ParseKEK decodes a 32-byte KEK written as 64 hex characters or as base64 (standard or URL
// alphabet, padded or not). Surrounding white space is ignored, since keys often come from files.
// Errors never repeat the value.
func ParseKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 2*KEKSize {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == KEKSize {
			return k, nil
		}
	}
	return nil, fmt.Errorf("key-encryption key must be %d bytes as 64 hex characters or base64 (got %d characters)", KEKSize, len(s))
}

// Seal encrypts a zone's P-256 private key under the KEK. The output is version || nonce ||
// ciphertext; the zone id is authenticated, so the sealed key cannot be moved to another zone.
func Seal(kek []byte, zoneID string, priv *ecdsa.PrivateKey) ([]byte, error) {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("sealing zone key: generating nonce: %w", err)
	}
	return sealWithNonce(kek, zoneID, priv, nonce[:])
}

// sealWithNonce is Seal with the nonce supplied, which lets FuzzOpen check that whatever opens was
// produced by sealing.
func sealWithNonce(kek []byte, zoneID string, priv *ecdsa.PrivateKey, nonce []byte) ([]byte, error) {
	if priv == nil || priv.Curve != elliptic.P256() {
		return nil, errors.New("sealing zone key: not a p-256 private key")
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, fmt.Errorf("sealing zone key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("sealing zone key: encoding pkcs#8: %w", err)
	}
	out := make([]byte, 0, 1+nonceSize+len(der)+tagSize)
	out = append(out, sealVersion)
	out = append(out, nonce...)
	out = aead.Seal(out, nonce, der, associatedData(zoneID))
	clear(der)
	return out, nil
}

// Open decrypts a key sealed by Seal for the same zone id under the same KEK. Any other zone id,
// KEK, or any change to the input fails.
func Open(kek []byte, zoneID string, sealed []byte) (*ecdsa.PrivateKey, error) {
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, fmt.Errorf("opening zone key: %w", err)
	}
	if len(sealed) < 1+nonceSize+tagSize {
		return nil, errors.New("opening zone key: sealed key is truncated")
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("opening zone key: unknown format version %d", sealed[0])
	}
	nonce, ct := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	der, err := aead.Open(nil, nonce, ct, associatedData(zoneID))
	if err != nil {
		return nil, errors.New("opening zone key: wrong key-encryption key, wrong zone, or corrupted data")
	}
	defer clear(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("opening zone key: decoding pkcs#8: %w", err)
	}
	priv, ok := key.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, errors.New("opening zone key: sealed key is not a p-256 ecdsa key")
	}
	return priv, nil
}

// newAEAD builds AES-256-GCM, refusing keys of other sizes rather than silently using AES-128.
func newAEAD(kek []byte) (cipher.AEAD, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("key-encryption key is %d bytes, want %d", len(kek), KEKSize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("building aes cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("building gcm: %w", err)
	}
	return aead, nil
}

// associatedData binds a sealed key to its zone.
func associatedData(zoneID string) []byte {
	return []byte(adPrefix + zoneID)
}
