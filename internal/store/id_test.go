package store

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestNewID(t *testing.T) {
	a, b := NewID("ses_"), NewID("ses_")
	if a == b {
		t.Fatalf("two ids alike: %q", a)
	}
	rest, ok := strings.CutPrefix(a, "ses_")
	if !ok {
		t.Fatalf("id %q lacks its prefix", a)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(raw) != 16 {
		t.Fatalf("id %q does not carry 16 base64url bytes: %v", a, err)
	}
	if id := NewID(""); len(id) != 22 {
		t.Fatalf("unprefixed id %q is not 22 characters", id)
	}
}
