package secret

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

// cheapPHC builds a PHC string by hand with low cost parameters, independently of Hash, so that
// tests exercising Check many times stay fast.
func cheapPHC(secret string, m, t uint32, p uint8) string {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(secret), salt, t, m, p, 32)
	enc := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, t, p, enc(salt), enc(key))
}

func TestGenerate(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(a)
	if err != nil || len(raw) != 32 {
		t.Fatalf("secret %q is not 32 bytes of unpadded base64url (%v)", a, err)
	}
	if a == b {
		t.Fatal("two secrets are equal")
	}
}

func TestHashUsesTheContractParameters(t *testing.T) {
	h, err := Hash("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\$argon2id\$v=19\$m=65536,t=3,p=4\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})$`)
	m := re.FindStringSubmatch(h)
	if m == nil {
		t.Fatalf("hash %q is not the expected PHC form", h)
	}
	// Recompute with the claimed parameters: the string must describe what was actually computed.
	salt, _ := base64.RawStdEncoding.DecodeString(m[1])
	want := base64.RawStdEncoding.EncodeToString(argon2.IDKey([]byte("s3cret"), salt, 3, 65536, 4, 32))
	if m[2] != want {
		t.Fatal("hash is not Argon2id of the secret with the stated parameters")
	}
	ok, err := Check(h, "s3cret")
	if err != nil || !ok {
		t.Fatalf("Check(own hash) = %v, %v", ok, err)
	}
	ok, err = Check(h, "s3cret ")
	if err != nil || ok {
		t.Fatalf("Check(wrong secret) = %v, %v", ok, err)
	}
	again, err := Hash("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if again == h {
		t.Fatal("two hashes of one secret share a salt")
	}
}

func TestCheckAcceptsParametersWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		m, t uint32
		p    uint8
	}{{64, 1, 1}, {128, 10, 16}, {8, 2, 1}} {
		phc := cheapPHC("pw", tc.m, tc.t, tc.p)
		if ok, err := Check(phc, "pw"); err != nil || !ok {
			t.Fatalf("Check(%s) = %v, %v", phc, ok, err)
		}
		if ok, err := Check(phc, "other"); err != nil || ok {
			t.Fatalf("Check(%s, other) = %v, %v", phc, ok, err)
		}
	}
}

func TestCheckRejectsMalformedHashes(t *testing.T) {
	good := cheapPHC("pw", 64, 1, 1)
	fields := strings.Split(good, "$")
	salt, key := fields[4], fields[5]
	with := func(alg, ver, params, s, k string) string {
		return strings.Join([]string{"", alg, ver, params, s, k}, "$")
	}
	short := base64.RawStdEncoding.EncodeToString([]byte("1234567"))
	long := base64.RawStdEncoding.EncodeToString(make([]byte, 65))
	tests := map[string]string{
		"empty":                        "",
		"argon2i":                      with("argon2i", "v=19", "m=64,t=1,p=1", salt, key),
		"version 16":                   with("argon2id", "v=16", "m=64,t=1,p=1", salt, key),
		"no version":                   "$argon2id$m=64,t=1,p=1$" + salt + "$" + key,
		"memory above 256 MiB":         with("argon2id", "v=19", "m=262145,t=1,p=1", salt, key),
		"memory below 8 per thread":    with("argon2id", "v=19", "m=15,t=1,p=2", salt, key),
		"time above 10":                with("argon2id", "v=19", "m=64,t=11,p=1", salt, key),
		"time zero":                    with("argon2id", "v=19", "m=64,t=0,p=1", salt, key),
		"threads above 16":             with("argon2id", "v=19", "m=1024,t=1,p=17", salt, key),
		"threads zero":                 with("argon2id", "v=19", "m=64,t=1,p=0", salt, key),
		"parameters out of order":      with("argon2id", "v=19", "t=1,m=64,p=1", salt, key),
		"an extra parameter":           with("argon2id", "v=19", "m=64,t=1,p=1,k=2", salt, key),
		"a missing parameter":          with("argon2id", "v=19", "m=64,t=1", salt, key),
		"a negative parameter":         with("argon2id", "v=19", "m=-64,t=1,p=1", salt, key),
		"a huge parameter":             with("argon2id", "v=19", "m=99999999999,t=1,p=1", salt, key),
		"a salt under 8 bytes":         with("argon2id", "v=19", "m=64,t=1,p=1", short, key),
		"a salt over 64 bytes":         with("argon2id", "v=19", "m=64,t=1,p=1", long, key),
		"a hash under 16 bytes":        with("argon2id", "v=19", "m=64,t=1,p=1", salt, short),
		"a hash over 64 bytes":         with("argon2id", "v=19", "m=64,t=1,p=1", salt, long),
		"a padded salt":                with("argon2id", "v=19", "m=64,t=1,p=1", salt+"==", key),
		"a url-alphabet salt":          with("argon2id", "v=19", "m=64,t=1,p=1", strings.Repeat("-", 22), key),
		"a trailing field":             good + "$x",
		"a missing leading dollar":     strings.TrimPrefix(good, "$"),
		"an absurdly long string":      good + strings.Repeat("A", 300),
		"a plain text secret":          "pw",
		"non-canonical base64 of hash": with("argon2id", "v=19", "m=64,t=1,p=1", salt, key[:len(key)-1]+"B"),
	}
	for name, phc := range tests {
		t.Run(name, func(t *testing.T) {
			ok, err := Check(phc, "pw")
			if err == nil || ok {
				t.Fatalf("Check(%q) = %v, %v; want an error", phc, ok, err)
			}
		})
	}
}
