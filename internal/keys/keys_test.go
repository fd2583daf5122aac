package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

func testKEK(label string) []byte {
	k := sha256.Sum256([]byte(label))
	return k[:]
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseKEK(t *testing.T) {
	// Bytes that hit the characters where the base64 alphabets differ (+/ versus -_).
	kek := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:KEKSize]
	accepted := map[string]string{
		"lower-case hex":           hex.EncodeToString(kek),
		"upper-case hex":           strings.ToUpper(hex.EncodeToString(kek)),
		"padded standard base64":   base64.StdEncoding.EncodeToString(kek),
		"unpadded standard base64": base64.RawStdEncoding.EncodeToString(kek),
		"padded url base64":        base64.URLEncoding.EncodeToString(kek),
		"unpadded url base64":      base64.RawURLEncoding.EncodeToString(kek),
		"a value from a file":      base64.StdEncoding.EncodeToString(kek) + "\n",
	}
	for name, s := range accepted {
		t.Run("accepts "+name, func(t *testing.T) {
			got, err := ParseKEK(s)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, kek) {
				t.Fatalf("ParseKEK = %x, want %x", got, kek)
			}
		})
	}
	secretish := "c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw"
	refused := map[string]string{
		"an empty value":          "",
		"31 bytes":                base64.StdEncoding.EncodeToString(kek[:31]),
		"33 bytes":                base64.StdEncoding.EncodeToString(append(kek, 1)),
		"63 hex characters":       hex.EncodeToString(kek)[:63],
		"64 characters of base64": strings.Repeat("z", 64),
		"a passphrase":            "correct horse battery staple",
		"a secret-looking value":  secretish,
	}
	for name, s := range refused {
		t.Run("refuses "+name, func(t *testing.T) {
			got, err := ParseKEK(s)
			if err == nil {
				t.Fatalf("ParseKEK accepted it: %x", got)
			}
			if s != "" && strings.Contains(err.Error(), strings.TrimSpace(s)) {
				t.Fatalf("error echoes the value: %v", err)
			}
		})
	}
}

func TestSealRoundTrip(t *testing.T) {
	kek := testKEK("kek")
	priv := newKey(t)
	sealed, err := Seal(kek, "zone-a", priv)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if sealed[0] != 1 || len(sealed) != 1+12+len(der)+16 {
		t.Fatalf("sealed key has version %d and %d bytes", sealed[0], len(sealed))
	}
	if bytes.Contains(sealed, der[len(der)-32:]) {
		t.Fatal("sealed key contains plaintext key material")
	}
	got, err := Open(kek, "zone-a", sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(priv) {
		t.Fatal("opened key differs from the sealed one")
	}
	again, err := Seal(kek, "zone-a", priv)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again[1:13], sealed[1:13]) {
		t.Fatal("two seals used the same nonce")
	}
}

func TestOpenRefuses(t *testing.T) {
	kek := testKEK("kek")
	sealed, err := Seal(kek, "zone-a", newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		kek    []byte
		zone   string
		sealed []byte
	}{
		"another zone id":             {kek, "zone-b", sealed},
		"a zone id with a suffix":     {kek, "zone-a\x00", sealed},
		"another key-encryption key":  {testKEK("other"), "zone-a", sealed},
		"a short key-encryption key":  {kek[:16], "zone-a", sealed},
		"an unknown version":          {kek, "zone-a", append([]byte{2}, sealed[1:]...)},
		"an extra trailing byte":      {kek, "zone-a", append(bytes.Clone(sealed), 0)},
		"nothing":                     {kek, "zone-a", nil},
		"a version and a nonce alone": {kek, "zone-a", sealed[:13]},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Open(tt.kek, tt.zone, tt.sealed); err == nil {
				t.Fatal("Open succeeded")
			}
		})
	}
	t.Run("any modified byte", func(t *testing.T) {
		for i := range sealed {
			for _, bit := range []byte{0x01, 0x80} {
				mod := bytes.Clone(sealed)
				mod[i] ^= bit
				if _, err := Open(kek, "zone-a", mod); err == nil {
					t.Fatalf("Open accepted byte %d flipped by %#x", i, bit)
				}
			}
		}
	})
	t.Run("any truncation", func(t *testing.T) {
		for n := range len(sealed) {
			if _, err := Open(kek, "zone-a", sealed[:n]); err == nil {
				t.Fatalf("Open accepted the first %d bytes", n)
			}
		}
	})
}

func TestSealRefusesBadInput(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Seal(testKEK("kek"), "zone-a", p384); err == nil {
		t.Fatal("Seal accepted a P-384 key")
	}
	if _, err := Seal(testKEK("kek"), "zone-a", nil); err == nil {
		t.Fatal("Seal accepted a nil key")
	}
	if _, err := Seal(testKEK("kek")[:31], "zone-a", newKey(t)); err == nil {
		t.Fatal("Seal accepted a 31-byte key-encryption key")
	}
}

// FuzzOpen: no input panics, and anything that opens re-seals, under its own nonce, to exactly the
// input: only genuine output of Seal is accepted.
func FuzzOpen(f *testing.F) {
	kek := testKEK("fuzz kek")
	sealed, err := Seal(kek, "zone-a", newKey(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("zone-a", sealed)
	f.Add("zone-b", sealed)
	f.Fuzz(func(t *testing.T, zone string, data []byte) {
		priv, err := Open(kek, zone, data)
		if err != nil {
			if priv != nil {
				t.Fatal("key returned with an error")
			}
			return
		}
		again, err := sealWithNonce(kek, zone, priv, data[1:13])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("opened input %x is not what sealing produces", data)
		}
	})
}
