package revocation

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Publisher publishes one stream entry. Fields arrive already signed when a stream key
// is configured (the outbox relay signs them); a Publisher sends them as given.
type Publisher interface {
	Publish(ctx context.Context, stream string, fields map[string]string) error
}

// Source keeps a RevokedSet (and optionally Epochs) up to date from a stream transport.
type Source interface {
	// Watermark is the newest heartbeat watermark applied: every revocation
	// acknowledged before this instant has been applied to the RevokedSet. The zero time
	// means the state was never shown to be complete (no valid heartbeat yet). A
	// verifier compares its age with its staleness bound and fails closed beyond it.
	Watermark() time.Time
	// Lag is how far behind the stream the applied state is, 0 when caught up.
	Lag() time.Duration
	// Stats returns the source's counters, for metrics.
	Stats() Stats
	// Close stops the source. The RevokedSet keeps what it received.
	Close() error
}

// Stats counts what a Source did with the entries it read.
type Stats struct {
	Applied      uint64 // entries applied to the RevokedSet or Epochs that changed them
	Heartbeats   uint64 // valid heartbeats read
	BadSignature uint64 // entries dropped: unsigned or wrongly signed while a key is set
	Malformed    uint64 // entries dropped: ParseEvent, ParseEpochEvent or ParseHeartbeat refused them
	Duplicates   uint64 // valid entries that changed nothing (already applied, or a replay)
	Reads        uint64 // successful stream reads, empty ones included (Redis only)
	Rebuilds     uint64 // reads from the retention horizon (Redis only)
	Gaps         uint64 // lost positions: stream reset or unread entries trimmed (Redis only)
	Errors       uint64 // failed Redis commands (Redis only)
	// Synced is true once the source has read the retained history at least once.
	Synced bool
}

// badSignatureLogEvery is the shortest interval between two WARN lines about entries
// dropped for bad signatures.
const badSignatureLogEvery = 30 * time.Second

// applier verifies and applies entries to a RevokedSet and Epochs, counting outcomes. It is
// shared by the Bus and the Redis consumer so both treat entries identically.
type applier struct {
	st  *RevokedSet
	ep  *Epochs
	key []byte
	log *zap.Logger
	now func() time.Time
	// keys receives caracal.keys entries; nil ignores them.
	keys *KeyWatchers

	applied, heartbeats, badSignature, malformed, duplicates atomic.Uint64
	watermark                                                atomic.Int64 // unix ns of the newest valid heartbeat watermark; 0 for none

	// Rate limit of the bad-signature WARN: when the last line was written and the
	// count it reported.
	sigLogMu    sync.Mutex
	sigLoggedAt time.Time
	sigLogged   uint64
}

func (a *applier) apply(stream string, fields map[string]string) {
	if stream == StreamKeys {
		a.applyKeys(fields)
		return
	}
	if stream != StreamSessionsRevoke && stream != StreamDelegationInvalidate {
		// Other streams (policy invalidation) share the transport but are not ours.
		return
	}
	if len(a.key) > 0 && !VerifySignature(a.key, stream, fields) {
		a.badSignature.Add(1)
		a.warnBadSignatures()
		return
	}
	switch {
	case stream == StreamSessionsRevoke && IsHeartbeat(fields):
		h, err := ParseHeartbeat(fields)
		if err != nil {
			a.malformed.Add(1)
			a.log.Debug("dropped malformed heartbeat", zap.Error(err))
			return
		}
		a.heartbeats.Add(1)
		a.observeWatermark(h.Watermark)
		return
	case stream == StreamSessionsRevoke:
		e, err := ParseEvent(fields)
		if err != nil {
			a.malformed.Add(1)
			a.log.Debug("dropped malformed revocation entry", zap.Error(err))
			return
		}
		if !a.st.Add(e) {
			a.duplicates.Add(1)
			return
		}
	default:
		e, err := ParseEpochEvent(fields)
		if err != nil {
			a.malformed.Add(1)
			a.log.Debug("dropped malformed epoch entry", zap.Error(err))
			return
		}
		if a.ep != nil && !a.ep.Observe(e) {
			a.duplicates.Add(1)
			return
		}
	}
	a.applied.Add(1)
}

// observeWatermark raises the watermark to w; it never moves back.
func (a *applier) observeWatermark(w time.Time) {
	ns := w.UnixNano()
	for {
		cur := a.watermark.Load()
		if ns <= cur || a.watermark.CompareAndSwap(cur, ns) {
			return
		}
	}
}

// currentWatermark is the newest watermark observed, the zero time before any.
func (a *applier) currentWatermark() time.Time {
	ns := a.watermark.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// warnBadSignatures logs at most once per badSignatureLogEvery, with the count since
// the previous line. Anyone able to write to the stream could otherwise flood the
// logs; Stats.BadSignature still counts every drop (the Caddy modules export it as
// caracal_revocation_entries_total with outcome "bad_signature").
func (a *applier) warnBadSignatures() {
	now := a.now()
	a.sigLogMu.Lock()
	if !a.sigLoggedAt.IsZero() && now.Sub(a.sigLoggedAt) < badSignatureLogEvery {
		a.sigLogMu.Unlock()
		return
	}
	total := a.badSignature.Load()
	n := total - a.sigLogged
	a.sigLoggedAt, a.sigLogged = now, total
	a.sigLogMu.Unlock()
	a.log.Warn(fmt.Sprintf("%d entries dropped for bad signatures; check stream_key", n),
		zap.Uint64("dropped", n), zap.Uint64("dropped_total", total))
}

func (a *applier) stats() Stats {
	return Stats{
		Applied:      a.applied.Load(),
		Heartbeats:   a.heartbeats.Load(),
		BadSignature: a.badSignature.Load(),
		Malformed:    a.malformed.Load(),
		Duplicates:   a.duplicates.Load(),
	}
}
