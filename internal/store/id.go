package store

import (
	"crypto/rand"
	"encoding/base64"
)

// ResourceIDPrefix begins the id of every resource record, whether the Coordinator's
// API or the STS's declared zones created it.
const ResourceIDPrefix = "res_"

// NewID returns a record id: prefix followed by 16 random bytes in base64url without
// padding (22 characters), printable ASCII as the revocation streams require.
func NewID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}
