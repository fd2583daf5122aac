package mandate

import "testing"

func TestScopeGranted(t *testing.T) {
	for _, tc := range []struct {
		granted, scope string
		want           bool
	}{
		{"a b c", "b", true},
		{"a b c", "c", true},
		{"ab", "a", false},
		{"a  b", "b", true},
		{"", "a", false},
		{"tool:search", "tool:search", true},
	} {
		if got := ScopeGranted(tc.granted, tc.scope); got != tc.want {
			t.Errorf("ScopeGranted(%q, %q) = %v", tc.granted, tc.scope, got)
		}
	}
}
