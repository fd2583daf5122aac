package revocation

import (
	"maps"
	"testing"
)

func TestPublishFields(t *testing.T) {
	key := []byte("k")
	t.Run("cleans a revocation's reason, drops a stale sig and signs", func(t *testing.T) {
		in := validSessionFields()
		in["reason"] = "line\nbreak"
		in["sig"] = "stale"
		before := maps.Clone(in)
		out := PublishFields(key, StreamSessionsRevoke, in)
		if !maps.Equal(in, before) {
			t.Fatalf("the input was changed: %v", in)
		}
		if out["reason"] != "line break" {
			t.Fatalf("reason %q, want the cleaned one", out["reason"])
		}
		if !VerifySignature(key, StreamSessionsRevoke, out) {
			t.Fatalf("entry %v does not verify", out)
		}
		if _, err := ParseEvent(out); err != nil {
			t.Fatalf("the published entry does not parse: %v", err)
		}
	})
	t.Run("leaves other streams' fields as given", func(t *testing.T) {
		in := map[string]string{"zone_id": "z", "reason": "a\tb"}
		out := PublishFields(key, StreamPolicyInvalidate, in)
		if out["reason"] != "a\tb" || !VerifySignature(key, StreamPolicyInvalidate, out) {
			t.Fatalf("got %v", out)
		}
	})
	t.Run("without a key nothing is signed", func(t *testing.T) {
		out := PublishFields(nil, StreamSessionsRevoke, map[string]string{"zone_id": "z", "sig": "x"})
		if _, ok := out["sig"]; ok || len(out) != 1 {
			t.Fatalf("got %v", out)
		}
	})
}

func TestPolicyEventFields(t *testing.T) {
	got := PolicyEvent{ZoneID: "acme", Version: 12}.Fields()
	want := map[string]string{"zone_id": "acme", "version": "12"}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
