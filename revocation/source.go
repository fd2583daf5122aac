package revocation

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Publisher publishes one stream entry. Fields arrive already signed when a stream key
// is configured (the outbox relay signs them); a Publisher sends them as given.
type Publisher interface {
	Publish(ctx context.Context, stream string, fields map[string]string) error
}

// Source keeps a Store (and optionally Epochs) up to date from a stream transport.
type Source interface {
	// LastContact is when the transport last answered. A verifier compares it with its
	// staleness bound and fails closed when the revocation state may be out of date.
	LastContact() time.Time
	// Lag is how far behind the stream the applied state is, 0 when caught up.
	Lag() time.Duration
	// Stats returns the source's counters, for metrics.
	Stats() Stats
	// Close stops the source. The Store keeps what it received.
	Close() error
}

// Stats counts what a Source did with the entries it read.
type Stats struct {
	Applied      uint64 // entries applied to the Store or Epochs
	BadSignature uint64 // entries dropped: unsigned or wrongly signed while a key is set
	Malformed    uint64 // entries dropped: ParseEvent or ParseEpochEvent refused them
	Reads        uint64 // successful stream reads, empty ones included (Redis only)
	Rebuilds     uint64 // reads from the retention horizon (Redis only)
	Gaps         uint64 // lost positions: stream reset or unread entries trimmed (Redis only)
	Errors       uint64 // failed Redis commands (Redis only)
}

// applier verifies and applies entries to a Store and Epochs, counting outcomes. It is
// shared by the Bus and the Redis consumer so both treat entries identically.
type applier struct {
	st  *Store
	ep  *Epochs
	key []byte
	log *zap.Logger

	applied, badSignature, malformed atomic.Uint64
}

func (a *applier) apply(stream string, fields map[string]string) {
	if stream != StreamSessionsRevoke && stream != StreamDelegationInvalidate {
		// Other streams (policy invalidation) share the transport but are not ours.
		return
	}
	if len(a.key) > 0 && !VerifySignature(a.key, stream, fields) {
		a.badSignature.Add(1)
		// Debug, not Warn: anyone able to write to the stream could otherwise flood
		// the logs. The counter makes forgeries visible in metrics.
		a.log.Debug("dropped stream entry with a missing or bad signature", zap.String("stream", stream))
		return
	}
	switch stream {
	case StreamSessionsRevoke:
		e, err := ParseEvent(fields)
		if err != nil {
			a.malformed.Add(1)
			a.log.Debug("dropped malformed revocation entry", zap.Error(err))
			return
		}
		a.st.Add(e)
	case StreamDelegationInvalidate:
		e, err := ParseEpochEvent(fields)
		if err != nil {
			a.malformed.Add(1)
			a.log.Debug("dropped malformed epoch entry", zap.Error(err))
			return
		}
		if a.ep != nil {
			a.ep.Observe(e)
		}
	}
	a.applied.Add(1)
}

func (a *applier) stats() Stats {
	return Stats{
		Applied:      a.applied.Load(),
		BadSignature: a.badSignature.Load(),
		Malformed:    a.malformed.Load(),
	}
}
