package revocation

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"testing"
)

func TestSignMatchesTheSpecifiedForm(t *testing.T) {
	key := []byte("stream-key")
	fields := validSessionFields()
	fields["sig"] = "ignored by the signature"
	// docs/protocol.md section 6, written out by hand: stream name, then the fields other than
	// sig in key order.
	canonical := "caracal.sessions.revoke\n" +
		"expires_at=1767312000000\n" +
		"reason=admin revoked\n" +
		"revoked_at=1767225600000\n" +
		"session_id=ses_2b7f\n" +
		"zone_id=acme.prod-1\n"
	h := hmac.New(sha256.New, key)
	h.Write([]byte(canonical))
	want := hex.EncodeToString(h.Sum(nil))
	if got := Sign(key, StreamSessionsRevoke, fields); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestVerifySignature(t *testing.T) {
	key := []byte("stream-key")
	good := signed(key, StreamSessionsRevoke, validSessionFields())
	if !VerifySignature(key, StreamSessionsRevoke, good) {
		t.Fatal("a correctly signed entry did not verify")
	}
	cases := []struct {
		name   string
		key    []byte
		stream string
		change func(map[string]string)
	}{
		{"a wrong key", []byte("other-key"), StreamSessionsRevoke, func(map[string]string) {}},
		{"another stream", key, StreamDelegationInvalidate, func(map[string]string) {}},
		{"a changed anchor", key, StreamSessionsRevoke, func(f map[string]string) { f["session_id"] = "ses_other" }},
		{"an added field", key, StreamSessionsRevoke, func(f map[string]string) { f["delegation_edge_id"] = "e" }},
		{"a removed field", key, StreamSessionsRevoke, func(f map[string]string) { delete(f, "reason") }},
		{"no sig", key, StreamSessionsRevoke, func(f map[string]string) { delete(f, "sig") }},
		{"an empty sig", key, StreamSessionsRevoke, func(f map[string]string) { f["sig"] = "" }},
		{"a sig that is not hex", key, StreamSessionsRevoke, func(f map[string]string) { f["sig"] = "zz" + f["sig"][2:] }},
		{"a truncated sig", key, StreamSessionsRevoke, func(f map[string]string) { f["sig"] = f["sig"][:32] }},
		{"a sig with extra bytes", key, StreamSessionsRevoke, func(f map[string]string) { f["sig"] = f["sig"] + "00" }},
	}
	for _, tc := range cases {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			f := maps.Clone(good)
			tc.change(f)
			if VerifySignature(tc.key, tc.stream, f) {
				t.Fatalf("verified %v", f)
			}
		})
	}

	t.Run("refuses a rearrangement of the signed text into other fields", func(t *testing.T) {
		// {"a": "1\nb=2"} and {"a": "1", "b": "2"} have the same signed form; only the
		// newline rule tells them apart.
		orig := signed(key, StreamSessionsRevoke, map[string]string{"a": "1", "b": "2"})
		forged := map[string]string{"a": "1\nb=2", "sig": orig["sig"]}
		if Sign(key, StreamSessionsRevoke, forged) != orig["sig"] {
			t.Fatal("the test premise does not hold: the forms differ")
		}
		if VerifySignature(key, StreamSessionsRevoke, forged) {
			t.Fatal("a value with a newline verified")
		}
		forgedKey := map[string]string{"a=1\nb": "2", "sig": orig["sig"]}
		if VerifySignature(key, StreamSessionsRevoke, forgedKey) {
			t.Fatal("a field name with '=' verified")
		}
	})
}
