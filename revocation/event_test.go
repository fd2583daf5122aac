package revocation

import (
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func validSessionFields() map[string]string {
	return map[string]string{
		"zone_id":    "acme.prod-1",
		"session_id": "ses_2b7f",
		"reason":     "admin revoked",
		"revoked_at": "1767225600000",
		"expires_at": "1767312000000",
	}
}

func TestParseEvent(t *testing.T) {
	t.Run("reads a session revocation", func(t *testing.T) {
		e, err := ParseEvent(validSessionFields())
		if err != nil {
			t.Fatal(err)
		}
		want := Event{
			ZoneID: "acme.prod-1", SessionID: "ses_2b7f", Reason: "admin revoked",
			RevokedAt: time.UnixMilli(1767225600000), ExpiresAt: time.UnixMilli(1767312000000),
		}
		if !sameEvent(e, want) {
			t.Fatalf("got %+v, want %+v", e, want)
		}
	})
	t.Run("reads an edge revocation and ignores sig", func(t *testing.T) {
		f := validSessionFields()
		delete(f, "session_id")
		f["delegation_edge_id"] = "edg_9"
		f["sig"] = "00"
		e, err := ParseEvent(f)
		if err != nil {
			t.Fatal(err)
		}
		if e.DelegationEdgeID != "edg_9" || e.SessionID != "" {
			t.Fatalf("got %+v", e)
		}
	})
	t.Run("accepts a missing reason", func(t *testing.T) {
		f := validSessionFields()
		delete(f, "reason")
		if _, err := ParseEvent(f); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("round-trips through Fields", func(t *testing.T) {
		e := Event{ZoneID: "z", DelegationEdgeID: "e1", Reason: "cascade",
			RevokedAt: time.UnixMilli(1700000000123), ExpiresAt: time.UnixMilli(1700003600456)}
		got, err := ParseEvent(e.Fields())
		if err != nil {
			t.Fatal(err)
		}
		if !sameEvent(got, e) {
			t.Fatalf("got %+v, want %+v", got, e)
		}
	})

	rejects := []struct {
		name   string
		change func(map[string]string)
	}{
		{"a missing zone_id", func(f map[string]string) { delete(f, "zone_id") }},
		{"an upper-case zone_id", func(f map[string]string) { f["zone_id"] = "Acme" }},
		{"a zone_id starting with a dot", func(f map[string]string) { f["zone_id"] = ".acme" }},
		{"a zone_id of 64 characters", func(f map[string]string) { f["zone_id"] = strings.Repeat("a", 64) }},
		{"a zone_id with a slash", func(f map[string]string) { f["zone_id"] = "a/b" }},
		{"no anchor", func(f map[string]string) { delete(f, "session_id") }},
		{"two anchors", func(f map[string]string) { f["delegation_edge_id"] = "edg_1" }},
		{"an empty session_id", func(f map[string]string) { f["session_id"] = "" }},
		{"a session_id with a space", func(f map[string]string) { f["session_id"] = "a b" }},
		{"a session_id with a newline", func(f map[string]string) { f["session_id"] = "a\nzone_id=x" }},
		{"a session_id of 257 bytes", func(f map[string]string) { f["session_id"] = strings.Repeat("s", 257) }},
		{"a non-ASCII session_id", func(f map[string]string) { f["session_id"] = "sés" }},
		{"a negative time", func(f map[string]string) { f["revoked_at"] = "-1767225600000" }},
		{"a signed time", func(f map[string]string) { f["revoked_at"] = "+1767225600000" }},
		{"a fractional time", func(f map[string]string) { f["expires_at"] = "1767312000000.5" }},
		{"a time in RFC 3339", func(f map[string]string) { f["expires_at"] = "2026-01-01T00:00:00Z" }},
		{"a time of 16 digits", func(f map[string]string) { f["expires_at"] = "1767312000000000" }},
		{"a zero time", func(f map[string]string) { f["revoked_at"] = "0" }},
		{"a missing revoked_at", func(f map[string]string) { delete(f, "revoked_at") }},
		{"a missing expires_at", func(f map[string]string) { delete(f, "expires_at") }},
		{"an unknown field", func(f map[string]string) { f["scope"] = "admin" }},
		{"a reason with a newline", func(f map[string]string) { f["reason"] = "x\nsession_id=victim" }},
		{"a reason longer than MaxReasonLen", func(f map[string]string) { f["reason"] = strings.Repeat("r", MaxReasonLen+1) }},
		{"a reason that is not UTF-8", func(f map[string]string) { f["reason"] = "\xff" }},
	}
	for _, tc := range rejects {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			f := validSessionFields()
			tc.change(f)
			if e, err := ParseEvent(f); err == nil {
				t.Fatalf("accepted %v as %+v", f, e)
			}
		})
	}
}

func TestParseEpochEvent(t *testing.T) {
	valid := func() map[string]string {
		return map[string]string{"zone_id": "z1", "epoch": "42", "edge_id": "edg_1", "event": "revoke", "sig": "ab"}
	}
	t.Run("reads every event kind", func(t *testing.T) {
		for _, kind := range []string{"create", "revoke", "expire"} {
			f := valid()
			f["event"] = kind
			e, err := ParseEpochEvent(f)
			if err != nil {
				t.Fatal(err)
			}
			if e != (EpochEvent{ZoneID: "z1", Epoch: 42, EdgeID: "edg_1", Event: kind}) {
				t.Fatalf("got %+v", e)
			}
		}
	})
	t.Run("round-trips through Fields", func(t *testing.T) {
		e := EpochEvent{ZoneID: "z-2", Epoch: 9007199254740993, EdgeID: "e", Event: "create"}
		got, err := ParseEpochEvent(e.Fields())
		if err != nil || got != e {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
	rejects := []struct {
		name   string
		change func(map[string]string)
	}{
		{"an unknown event", func(f map[string]string) { f["event"] = "delete" }},
		{"a negative epoch", func(f map[string]string) { f["epoch"] = "-1" }},
		{"an epoch beyond int64", func(f map[string]string) { f["epoch"] = "9223372036854775808" }},
		{"a missing epoch", func(f map[string]string) { delete(f, "epoch") }},
		{"a missing edge_id", func(f map[string]string) { delete(f, "edge_id") }},
		{"a missing event", func(f map[string]string) { delete(f, "event") }},
		{"a missing zone_id", func(f map[string]string) { delete(f, "zone_id") }},
		{"a bad zone_id", func(f map[string]string) { f["zone_id"] = "-z" }},
		{"an unknown field", func(f map[string]string) { f["session_id"] = "s" }},
	}
	for _, tc := range rejects {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			f := valid()
			tc.change(f)
			if e, err := ParseEpochEvent(f); err == nil {
				t.Fatalf("accepted %v as %+v", f, e)
			}
		})
	}
}

func TestCleanReason(t *testing.T) {
	cases := []struct{ in, want string }{
		{"compromised", "compromised"},
		{"line one\nline two\ttab", "line one line two tab"},
		{"bad \xff byte", "bad \uFFFD byte"},
		{"", ""},
	}
	for _, tc := range cases {
		if got := CleanReason(tc.in); got != tc.want {
			t.Errorf("CleanReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	t.Run("cuts long text on a character boundary into a reason ParseEvent accepts", func(t *testing.T) {
		long := strings.Repeat("é", MaxReasonLen) // two bytes each
		got := CleanReason("x" + long)
		if len(got) > MaxReasonLen || !utf8.ValidString(got) || !strings.HasPrefix(got, "xé") {
			t.Fatalf("got %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
		}
		f := validSessionFields()
		f["reason"] = got
		if _, err := ParseEvent(f); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEventFieldsKeepsBothAnchorsSoParsingRefusesThem(t *testing.T) {
	e := sessionEvent("z", "s")
	e.DelegationEdgeID = "e"
	f := e.Fields()
	if f["session_id"] != "s" || f["delegation_edge_id"] != "e" {
		t.Fatalf("fields %v", f)
	}
	if _, err := ParseEvent(maps.Clone(f)); err == nil {
		t.Fatal("an event with two anchors parsed")
	}
}

func sameEvent(a, b Event) bool {
	return a.ZoneID == b.ZoneID && a.SessionID == b.SessionID && a.DelegationEdgeID == b.DelegationEdgeID &&
		a.Reason == b.Reason && a.RevokedAt.Equal(b.RevokedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}
