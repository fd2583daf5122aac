package mandate

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
)

// DefaultLeeway is the clock skew tolerated on exp, nbf and iat when Verifier.Leeway is zero.
const DefaultLeeway = 30 * time.Second

// Expect pins what a verifier accepts. Every field is required.
type Expect struct {
	// Issuer is the pinned zone issuer URL (see IssuerURL).
	Issuer string
	// ZoneID is the pinned zone.
	ZoneID string
	// Audience is the exact aud: the zone issuer for session mandates, the resource identifier for
	// resource mandates.
	Audience string
	// Use is UseSession or UseResource; it also fixes the typ header the token must carry.
	Use string
}

// Verifier checks mandates. The zero value is not usable: Keys is required.
type Verifier struct {
	// Keys resolves the kid of the token to a key of the pinned zone.
	Keys KeySource
	// Leeway is the clock skew tolerated on exp, nbf and iat: DefaultLeeway when zero, none when
	// negative.
	Leeway time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// forbiddenHeaders would let the token choose its own key or demand processing we do not do.
var forbiddenHeaders = []string{"jku", "x5u", "jwk", "x5c", "crit"}

// Verify checks the token against the pinned zone in the order of docs/protocol.md section 3 and returns its
// claims. Every failure is an *Error matching exactly one of the Err* reasons; a key source that
// cannot answer gives ErrKeysUnavailable. Revocation and scopes are the caller's business.
func (v *Verifier) Verify(ctx context.Context, token string, want Expect) (*Claims, error) {
	if v.Keys == nil {
		return nil, errors.New("mandate: verifier has no key source")
	}
	wantTyp, ok := typForUse(want.Use)
	if !ok || want.Issuer == "" || want.ZoneID == "" || want.Audience == "" {
		return nil, errors.New("mandate: expectation needs issuer, zone id, audience and a known use")
	}

	if len(token) > MaxTokenSize {
		return nil, ErrTooLarge
	}
	header, payload, sig, err := splitCompact(token)
	if err != nil {
		return nil, err
	}
	kid, err := checkHeader(header, wantTyp)
	if err != nil {
		return nil, err
	}

	pub, err := v.Keys.Key(ctx, kid)
	switch {
	case errors.Is(err, ErrUnknownKey) || (err == nil && pub == nil):
		return nil, fail(ErrUnknownKey, "kid is not a signing key of the zone")
	case err != nil:
		e := fail(ErrKeysUnavailable, "signing keys unavailable: "+err.Error())
		e.Err = err
		return nil, e
	}

	// The header's alg is ES256 (checkHeader), so the signing input is the token up to its
	// second dot and the signature its 64-byte R || S (RFC 7518 section 3.4).
	if !verifyES256(pub, token[:strings.LastIndexByte(token, '.')], sig) {
		return nil, ErrSignature
	}
	// go-jose's JSON decoder matches member names case-sensitively and rejects duplicate members and
	// trailing data, so the claims we read are the claims that were signed, read one way only. The
	// plain shape a Signer writes is read without it, to the same claims (decodeClaimsFast).
	var c Claims
	if !decodeClaimsFast(payload, &c) {
		c = Claims{}
		if err := josejson.Unmarshal(payload, &c); err != nil {
			return nil, fail(ErrMalformed, "claims are not a valid json object of the expected types")
		}
	}

	if c.Issuer != want.Issuer {
		return nil, ErrIssuer
	}
	if c.Audience != want.Audience {
		return nil, ErrAudience
	}
	if c.Use != want.Use {
		return nil, ErrUse
	}
	if err := v.checkTimes(&c); err != nil {
		return nil, err
	}
	if c.ZoneID != want.ZoneID {
		return nil, ErrZone
	}
	return &c, nil
}

// splitCompact checks the compact form and returns the decoded header, payload and signature. Only
// the base64url alphabet and two dots are allowed: the standard decoder skips CR and LF, and
// accepting them would give one signature many token strings.
func splitCompact(token string) (header, payload, sig []byte, err error) {
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return nil, nil, nil, fail(ErrMalformed, "token has characters outside base64url")
		}
	}
	if dots != 2 {
		return nil, nil, nil, fail(ErrMalformed, "token is not three dot-separated parts")
	}
	// Empty parts are left to the checks that follow, so that an unsigned alg=none token is reported
	// as the algorithm failure it is.
	h, rest, _ := strings.Cut(token, ".")
	p, s, _ := strings.Cut(rest, ".")
	// Strict decoding of every part rejects non-zero padding bits, which would otherwise give a
	// second spelling of the same bytes.
	if payload, err = b64.DecodeString(p); err != nil {
		return nil, nil, nil, fail(ErrMalformed, "payload is not base64url")
	}
	if sig, err = b64.DecodeString(s); err != nil {
		return nil, nil, nil, fail(ErrMalformed, "signature is not base64url")
	}
	if header, err = b64.DecodeString(h); err != nil {
		return nil, nil, nil, fail(ErrMalformed, "header is not base64url")
	}
	return header, payload, sig, nil
}

// verifyES256 checks a JWS ES256 signature (R and S, 32 big-endian bytes each) over the
// signing input with a P-256 key. The signing input is hashed from a stack copy (tokens are
// at most MaxTokenSize, checked by the caller), and the signature is rewritten into the
// ASN.1 form crypto/ecdsa takes in a stack buffer: a cold verification allocates nothing
// beyond what crypto/ecdsa does.
func verifyES256(pub *ecdsa.PublicKey, input string, sig []byte) bool {
	if len(sig) != 64 || pub.Curve != elliptic.P256() {
		return false
	}
	var buf [MaxTokenSize]byte
	digest := sha256.Sum256(buf[:copy(buf[:], input)])
	var der [72]byte
	return ecdsa.VerifyASN1(pub, digest[:], es256DER(der[:0], sig))
}

// es256DER appends to dst the ASN.1 DER SEQUENCE { INTEGER r, INTEGER s } of a 64-byte
// R || S signature: each integer minimal, with a zero byte in front when its top bit is set.
func es256DER(dst, sig []byte) []byte {
	dst = append(dst, 0x30, 0)
	dst = derInteger(dst, sig[:32])
	dst = derInteger(dst, sig[32:])
	dst[1] = byte(len(dst) - 2)
	return dst
}

func derInteger(dst, n []byte) []byte {
	for len(n) > 1 && n[0] == 0 {
		n = n[1:]
	}
	if n[0]&0x80 != 0 {
		dst = append(dst, 0x02, byte(len(n)+1), 0)
	} else {
		dst = append(dst, 0x02, byte(len(n)))
	}
	return append(dst, n...)
}

// checkHeader applies the header checks in contract order and returns the kid.
func checkHeader(raw []byte, wantTyp string) (string, error) {
	if kid, ok := canonicalHeader(raw, wantTyp); ok {
		return kid, nil
	}
	return parseHeader(raw, wantTyp)
}

// The header a Signer writes, around its kid: {"alg":"ES256","kid":"…","typ":"…"}.
const (
	headerPrefix = `{"alg":"ES256","kid":"`
	headerMiddle = `","typ":"`
	headerSuffix = `"}`
)

// canonicalHeader recognises, without a JSON decoder, the exact bytes of the header a
// Signer writes for wantTyp: alg ES256, a kid of plain characters, typ wantTyp, nothing
// else. For those bytes parseHeader returns the same kid (FuzzCheckHeader holds the two
// to that); anything else, including a valid header spelt differently, is left to
// parseHeader and reported false.
func canonicalHeader(raw []byte, wantTyp string) (string, bool) {
	n := len(raw) - len(headerPrefix) - len(headerMiddle) - len(wantTyp) - len(headerSuffix)
	if n <= 0 {
		return "", false
	}
	rest, ok := bytes.CutPrefix(raw, []byte(headerPrefix))
	if !ok {
		return "", false
	}
	kid, tail := rest[:n], rest[n:]
	if len(tail) != len(headerMiddle)+len(wantTyp)+len(headerSuffix) ||
		string(tail[:len(headerMiddle)]) != headerMiddle ||
		string(tail[len(headerMiddle):len(headerMiddle)+len(wantTyp)]) != wantTyp ||
		string(tail[len(headerMiddle)+len(wantTyp):]) != headerSuffix {
		return "", false
	}
	for _, c := range kid {
		// No quote, backslash or control character: the kid's bytes are its value.
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			return "", false
		}
	}
	return string(kid), true
}

// parseHeader decodes any header as JSON and applies the checks to it.
func parseHeader(raw []byte, wantTyp string) (string, error) {
	var h map[string]josejson.RawMessage
	if err := josejson.Unmarshal(raw, &h); err != nil || h == nil {
		return "", fail(ErrMalformed, "header is not a valid json object")
	}
	if alg, ok := headerString(h, "alg"); !ok || alg != string(jose.ES256) {
		return "", ErrAlgorithm
	}
	if typ, ok := headerString(h, "typ"); !ok || typ != wantTyp {
		return "", ErrType
	}
	for _, name := range forbiddenHeaders {
		if _, ok := h[name]; ok {
			return "", fail(ErrMalformed, "header carries a forbidden "+name+" parameter")
		}
	}
	rawKID, ok := h["kid"]
	if !ok {
		return "", fail(ErrUnknownKey, "header has no kid")
	}
	var kid string
	if err := josejson.Unmarshal(rawKID, &kid); err != nil {
		return "", fail(ErrMalformed, "kid is not a string")
	}
	if kid == "" {
		return "", fail(ErrUnknownKey, "header has an empty kid")
	}
	return kid, nil
}

// headerString returns a header parameter that must be a JSON string.
func headerString(h map[string]josejson.RawMessage, name string) (string, bool) {
	raw, ok := h[name]
	if !ok {
		return "", false
	}
	var s string
	if err := josejson.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// EffectiveLeeway is the leeway a Verifier applies for a configured one: DefaultLeeway
// when zero, none when negative.
func EffectiveLeeway(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultLeeway
	case d < 0:
		return 0
	}
	return d
}

// checkTimes applies exp (required), nbf and iat with the leeway. Comparisons are done on the
// clock side so that huge claim values cannot overflow into the past.
func (v *Verifier) checkTimes(c *Claims) error {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	leeway := EffectiveLeeway(v.Leeway)
	t := now()
	early, late := t.Add(-leeway).Unix(), t.Add(leeway).Unix()
	if c.Expiry == 0 {
		return fail(ErrMalformed, "token has no exp claim")
	}
	if early >= c.Expiry {
		return ErrExpired
	}
	if c.NotBefore > late {
		return ErrNotYetValid
	}
	if c.IssuedAt > late {
		return ErrIssuedInFuture
	}
	return nil
}
