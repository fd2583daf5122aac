package outbox

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/caracalgw/caracal/revocation"
)

// heartbeatState is what the relay remembers of its last heartbeat. Only the Run
// goroutine uses it.
type heartbeatState struct {
	sent      bool
	sentAt    time.Time // by the relay's clock, when the last heartbeat went out
	watermark time.Time // the last heartbeat's watermark
}

// newRelayName returns a random publisher name for a relay that was given none.
func newRelayName() string {
	return "relay-" + rand.Text()[:12]
}

// beat appends a heartbeat after a successful drain pass when one is due (the first
// pass, then every HeartbeatInterval). mark is the instant just before the pass's last
// outbox query, which found fewer rows than a batch and all of them are now published:
// every row committed before mark is on the stream ahead of this heartbeat, so mark is
// its watermark. A watermark never moves back: when the clock does, the previous one
// is repeated.
func (r *Relay) beat(ctx context.Context, mark time.Time) error {
	now := r.o.Now()
	// A clock that went back makes one due at once rather than after the jump.
	if d := now.Sub(r.hb.sentAt); r.hb.sent && d >= 0 && d < r.o.HeartbeatInterval {
		return nil
	}
	w := mark
	if w.Before(r.hb.watermark) {
		w = r.hb.watermark
	}
	sentAt := now
	if sentAt.Before(w) {
		// ParseHeartbeat refuses a watermark after sent_at.
		sentAt = w
	}
	fields := revocation.Heartbeat{Publisher: r.o.Name, Watermark: w, SentAt: sentAt}.SignedFields(r.o.Key)
	if err := r.o.Publisher.Publish(ctx, revocation.StreamSessionsRevoke, fields); err != nil {
		return fmt.Errorf("publishing heartbeat: %w", err)
	}
	r.hb = heartbeatState{sent: true, sentAt: now, watermark: w}
	return nil
}
