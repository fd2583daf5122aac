package mandate

import (
	"regexp"
	"strings"
	"testing"
)

// The regular expressions of docs/protocol.md section 1 and RFC 6749 section 3.3, as oracles for
// the hand-written checks.
var (
	zoneIDOracle = regexp.MustCompile(ZoneIDSyntax)
	scopeOracle  = regexp.MustCompile(`^[\x21\x23-\x5b\x5d-\x7e]+$`)
	idOracle     = regexp.MustCompile(`^[\x21-\x7e]{1,256}$`)
)

func TestValidZoneID(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"acme", true},
		{"0", true},
		{"a.b-c_d", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"Acme", false},
		{".acme", false},
		{"-acme", false},
		{"_acme", false},
		{"ac me", false},
		{"acme/x", false},
		{"acm\u00e9", false},
		{"acme\n", false},
	} {
		if got := ValidZoneID(c.in); got != c.want {
			t.Errorf("ValidZoneID(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestValidScopeToken(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"read", true},
		{"files:read", true},
		{"!#[]~", true},
		{strings.Repeat("s", 4096), true},
		{"", false},
		{"a b", false},
		{`a"b`, false},
		{`a\b`, false},
		{"a\x7f", false},
		{"\u00e9", false},
		{"a\tb", false},
	} {
		if got := ValidScopeToken(c.in); got != c.want {
			t.Errorf("ValidScopeToken(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestValidRecordID(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"ses_2b7f", true},
		{"a\"b\\c~", true},
		{strings.Repeat("i", 256), true},
		{strings.Repeat("i", 257), false},
		{"", false},
		{"a b", false},
		{"a\nb", false},
		{"a\x7f", false},
		{"\u00e9", false},
	} {
		if got := ValidRecordID(c.in); got != c.want {
			t.Errorf("ValidRecordID(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// FuzzSyntax checks the identifier checks against their regular expressions.
func FuzzSyntax(f *testing.F) {
	for _, s := range []string{"acme", "a.b-c_d", "Acme", ".a", "", "files:read", `a"b`, `a\b`, "a b", "\xff", strings.Repeat("z", 63), strings.Repeat("z", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidZoneID(s), zoneIDOracle.MatchString(s); got != want {
			t.Fatalf("ValidZoneID(%q) = %v, the syntax says %v", s, got, want)
		}
		if got, want := ValidScopeToken(s), scopeOracle.MatchString(s); got != want {
			t.Fatalf("ValidScopeToken(%q) = %v, the syntax says %v", s, got, want)
		}
		if got, want := ValidRecordID(s), idOracle.MatchString(s); got != want {
			t.Fatalf("ValidRecordID(%q) = %v, the syntax says %v", s, got, want)
		}
	})
}
