package revocation

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// Sign returns the hex HMAC-SHA256 of docs/protocol.md section 6: over "<stream>\n" followed by
// every field except sig, sorted by key, each written as "key=value\n". stream is the
// logical stream name, not a prefixed Redis key.
func Sign(key []byte, stream string, fields map[string]string) string {
	return hex.EncodeToString(mac(key, stream, fields))
}

// VerifySignature reports whether fields carry a sig that Sign would produce with key.
// It is false when sig is absent or not hex. The comparison is constant-time.
//
// It also refuses a field name holding '=' or a newline, or a value holding a newline:
// only then is the signed form unambiguous, so no rearrangement of a signed entry's
// text into other fields can verify. Events that pass ParseEvent never contain them.
func VerifySignature(key []byte, stream string, fields map[string]string) bool {
	sig, ok := fields[fieldSig]
	if !ok {
		return false
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	for k, v := range fields {
		if strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
			return false
		}
	}
	return hmac.Equal(got, mac(key, stream, fields))
}

func mac(key []byte, stream string, fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if k != fieldSig {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	buf := make([]byte, 0, 256)
	buf = append(buf, stream...)
	buf = append(buf, '\n')
	for _, k := range keys {
		buf = append(buf, k...)
		buf = append(buf, '=')
		buf = append(buf, fields[k]...)
		buf = append(buf, '\n')
	}
	h := hmac.New(sha256.New, key)
	h.Write(buf) // a hash.Hash never returns a write error
	return h.Sum(nil)
}
