package revocation

import (
	"strings"
	"testing"
	"time"
)

func TestHeartbeatRoundTrip(t *testing.T) {
	h := Heartbeat{Publisher: "relay-1", Watermark: time.UnixMilli(1_700_000_000_000), SentAt: time.UnixMilli(1_700_000_000_500)}
	got, err := ParseHeartbeat(h.Fields())
	if err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Fatalf("round trip: got %+v, want %+v", got, h)
	}
	if !IsHeartbeat(h.Fields()) {
		t.Fatal("IsHeartbeat is false for a heartbeat")
	}
	// A consumer that predates heartbeats must drop it instead of revoking anything.
	if _, err := ParseEvent(h.Fields()); err == nil {
		t.Fatal("ParseEvent accepted a heartbeat")
	}
}

func TestParseHeartbeatRefuses(t *testing.T) {
	base := Heartbeat{Publisher: "relay-1", Watermark: time.UnixMilli(1000), SentAt: time.UnixMilli(2000)}.Fields()
	cases := map[string]func(map[string]string){
		"no type":           func(f map[string]string) { delete(f, fieldType) },
		"other type":        func(f map[string]string) { f[fieldType] = "revocation" },
		"no publisher":      func(f map[string]string) { delete(f, fieldPublisher) },
		"publisher spaces":  func(f map[string]string) { f[fieldPublisher] = "a b" },
		"no watermark":      func(f map[string]string) { delete(f, fieldWatermark) },
		"signed watermark":  func(f map[string]string) { f[fieldWatermark] = "+1000" },
		"no sent_at":        func(f map[string]string) { delete(f, fieldSentAt) },
		"watermark ahead":   func(f map[string]string) { f[fieldWatermark] = "3000" },
		"unknown field":     func(f map[string]string) { f["session_id"] = "s1" },
		"huge number":       func(f map[string]string) { f[fieldSentAt] = strings.Repeat("9", 40) },
		"zero watermark":    func(f map[string]string) { f[fieldWatermark] = "0" },
		"non-digit sent_at": func(f map[string]string) { f[fieldSentAt] = "12x" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			f := make(map[string]string, len(base))
			for k, v := range base {
				f[k] = v
			}
			mutate(f)
			if h, err := ParseHeartbeat(f); err == nil {
				t.Fatalf("accepted %v as %+v", f, h)
			}
		})
	}
}
