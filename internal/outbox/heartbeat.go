package outbox

import (
	"context"
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

// beat appends a heartbeat when one is due (the first pass, then every
// HeartbeatInterval). Its watermark is the store's OutboxWatermark, taken now: the
// database's now, or the creation time of the oldest row not yet published (claimed by
// any relay or not), whichever is earlier, and never later than the relay's own clock.
// Rows published before that query were appended to the stream before it, so the
// heartbeat, appended after it, follows every revocation committed before its
// watermark. A watermark never moves back: when a clock does, the previous one is
// repeated.
func (r *Relay) beat(ctx context.Context) error {
	now := r.o.Now()
	// A clock that went back makes one due at once rather than after the jump.
	if d := now.Sub(r.hb.sentAt); r.hb.sent && d >= 0 && d < r.o.HeartbeatInterval {
		return nil
	}
	w, err := r.o.Store.OutboxWatermark(ctx)
	if err != nil {
		return fmt.Errorf("reading the outbox watermark: %w", err)
	}
	if w.After(now) {
		w = now
	}
	if w.Before(r.hb.watermark) {
		w = r.hb.watermark
	}
	sentAt := now
	if sentAt.Before(w) {
		// ParseHeartbeat refuses a watermark after sent_at.
		sentAt = w
	}
	// PublishHeartbeat signs and binds the heartbeat to the streams' generation.
	fields := revocation.Heartbeat{Publisher: r.o.ID, Watermark: w, SentAt: sentAt}.Fields()
	if err := r.PublishHeartbeat(ctx, fields); err != nil {
		return fmt.Errorf("publishing heartbeat: %w", err)
	}
	r.hb = heartbeatState{sent: true, sentAt: now, watermark: w}
	return nil
}
