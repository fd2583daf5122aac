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

// FuzzParseHeartbeat feeds ParseHeartbeat field sets written as FuzzParseEvent's. An
// accepted heartbeat is complete, never claims a watermark after it was sent, survives
// a round trip, verifies once signed, and is told apart from a revocation.
func FuzzParseHeartbeat(f *testing.F) {
	f.Add("type=heartbeat\npublisher=relay-1\nwatermark=1767225600000\nsent_at=1767225600500")
	f.Add("type=heartbeat\npublisher=relay-1\nwatermark=2\nsent_at=1\nsig=00")
	f.Add("type=revocation\npublisher=r\nwatermark=1\nsent_at=1")
	f.Add("type=heartbeat\npublisher=\nwatermark=1\nsent_at=1")
	f.Fuzz(func(t *testing.T, input string) {
		fields := make(map[string]string)
		for line := range strings.SplitSeq(input, "\n") {
			k, v, _ := strings.Cut(line, "=")
			fields[k] = v
		}
		h, err := ParseHeartbeat(fields)
		if err != nil {
			return
		}
		if !IsHeartbeat(fields) || checkID(h.Publisher) != nil {
			t.Fatalf("accepted %v as %+v", fields, h)
		}
		if h.Watermark.UnixMilli() <= 0 || h.Watermark.After(h.SentAt) {
			t.Fatalf("accepted watermark %v with sent_at %v", h.Watermark, h.SentAt)
		}
		again, err := ParseHeartbeat(h.Fields())
		if err != nil || again != h {
			t.Fatalf("round trip of %+v gave %+v, %v", h, again, err)
		}
		key := []byte("fuzz")
		if !VerifySignature(key, StreamSessionsRevoke, h.SignedFields(key)) {
			t.Fatalf("a signed accepted heartbeat does not verify: %+v", h)
		}
		if _, err := ParseEvent(fields); err == nil {
			t.Fatalf("ParseEvent accepted the heartbeat %v", fields)
		}
	})
}
