package revocation

import (
	"strings"
	"testing"
)

// FuzzParseEvent feeds ParseEvent arbitrary field sets, written one "key=value" per
// line (a line without '=' is a key with an empty value). Whatever it accepts must be
// a well-formed event that survives a round trip and verifies once signed.
func FuzzParseEvent(f *testing.F) {
	f.Add("zone_id=acme\nsession_id=ses_1\nreason=admin\nrevoked_at=1767225600000\nexpires_at=1767312000000")
	f.Add("zone_id=a.b-c_d\ndelegation_edge_id=edg_1\nrevoked_at=1\nexpires_at=999999999999999\nsig=00ff")
	f.Add("zone_id=acme\nsession_id=s\ndelegation_edge_id=e\nrevoked_at=1\nexpires_at=2")
	f.Add("zone_id=Acme\nsession_id=s\nrevoked_at=1\nexpires_at=2")
	f.Add("zone_id=acme\nsession_id=s\nrevoked_at=-1\nexpires_at=+2")
	f.Add("zone_id=acme\nsession_id=s\nrevoked_at=1\nexpires_at=2\nextra=1")
	f.Add("zone_id=acme\nsession_id=s\u00e9\nreason=\x00\nrevoked_at=1\nexpires_at=2")
	f.Fuzz(func(t *testing.T, input string) {
		fields := make(map[string]string)
		for line := range strings.SplitSeq(input, "\n") {
			k, v, _ := strings.Cut(line, "=")
			fields[k] = v
		}
		e, err := ParseEvent(fields)
		if err != nil {
			return
		}
		if checkZoneID(e.ZoneID) != nil {
			t.Fatalf("accepted zone id %q", e.ZoneID)
		}
		if (e.SessionID == "") == (e.DelegationEdgeID == "") {
			t.Fatalf("accepted an event without exactly one anchor: %+v", e)
		}
		if e.RevokedAt.IsZero() || e.ExpiresAt.IsZero() || e.RevokedAt.UnixMilli() <= 0 || e.ExpiresAt.UnixMilli() <= 0 {
			t.Fatalf("accepted times %v, %v", e.RevokedAt, e.ExpiresAt)
		}
		if len(e.Reason) > MaxReasonLen {
			t.Fatalf("accepted a reason of %d bytes", len(e.Reason))
		}
		again, err := ParseEvent(e.Fields())
		if err != nil || !sameEvent(again, e) {
			t.Fatalf("round trip of %+v gave %+v, %v", e, again, err)
		}
		key := []byte("fuzz")
		fs := signed(key, StreamSessionsRevoke, e.Fields())
		if !VerifySignature(key, StreamSessionsRevoke, fs) {
			t.Fatalf("a signed accepted event does not verify: %v", fs)
		}
		if CleanReason(e.Reason) != e.Reason {
			t.Fatalf("CleanReason changed an accepted reason %q", e.Reason)
		}
	})
}
