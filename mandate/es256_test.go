package mandate

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// es256DER must produce exactly the DER encoding/asn1 gives for the same integers, for
// the shapes that need care: leading zero bytes, the top bit set, a zero integer.
func TestES256DERMatchesASN1(t *testing.T) {
	word := func(fill byte, lead int) []byte {
		w := bytes.Repeat([]byte{fill}, 32)
		for i := range lead {
			w[i] = 0
		}
		return w
	}
	cases := [][2][]byte{
		{word(0x7f, 0), word(0x01, 0)},
		{word(0x80, 0), word(0xff, 0)},
		{word(0x80, 1), word(0x01, 5)},
		{word(0x01, 31), word(0x00, 32)},
	}
	for range 64 {
		var r, s [32]byte
		_, _ = rand.Read(r[:])
		_, _ = rand.Read(s[:])
		cases = append(cases, [2][]byte{r[:], s[:]})
	}
	for _, c := range cases {
		want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(c[0]), new(big.Int).SetBytes(c[1])})
		if err != nil {
			t.Fatal(err)
		}
		if got := es256DER(nil, append(c[0][:32:32], c[1]...)); !bytes.Equal(got, want) {
			t.Fatalf("r=%x s=%x: got %x, want %x", c[0], c[1], got, want)
		}
	}
}

// A genuine mandate verifies whatever the shape of its R and S, and a signature of the
// wrong length, or with R or S changed, does not.
func TestVerifyChecksTheRawSignature(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for range 200 {
		tok := f.sign(t, TypResource, f.resourceClaims())
		if _, err := f.v.Verify(ctx, tok, resourceExpect); err != nil {
			t.Fatalf("genuine mandate refused: %v", err)
		}
	}
	tok := f.sign(t, TypResource, f.resourceClaims())
	i := strings.LastIndexByte(tok, '.')
	sig, err := b64.DecodeString(tok[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"short":           sig[:63],
		"long":            append(append([]byte{}, sig...), 0),
		"r changed":       append([]byte{sig[0] ^ 1}, sig[1:]...),
		"s changed":       append(append([]byte{}, sig[:63]...), sig[63]^1),
		"r and s swapped": append(append([]byte{}, sig[32:]...), sig[:32]...),
	} {
		forged := tok[:i+1] + b64.EncodeToString(bad)
		if _, err := f.v.Verify(ctx, forged, resourceExpect); !errors.Is(err, ErrSignature) {
			t.Errorf("%s signature: got %v, want ErrSignature", name, err)
		}
	}
}
