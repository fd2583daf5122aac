package revocation

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultRetention is how long stream entries are kept when no retention is
// configured: the maximum mandate lifetime (24 h) plus a minute for clock skew. An
// entry must outlive every mandate its anchor can appear in.
const DefaultRetention = 24*time.Hour + time.Minute

// Bus is the in-process transport used when no Redis is configured. It has the
// semantics of the Redis streams: every attached Source receives every entry, in
// publication order, and a Source attached late first receives the retained history
// (entries younger than the retention), so it rebuilds the same state.
//
// Delivery is synchronous: when Publish returns, every attached RevokedSet has applied the
// entry.
type Bus struct {
	retention time.Duration
	now       func() time.Time

	mu      sync.Mutex
	history []busEntry // oldest first
	// heartbeat is the latest heartbeat, kept apart from the history: one per second
	// would fill it, and only the newest matters to a Source attached late.
	heartbeat *busEntry
	sources   map[*busSource]struct{}
}

type busEntry struct {
	stream string
	fields map[string]string
	at     time.Time
}

// NewBus returns an empty Bus keeping entries for retention (DefaultRetention when not
// positive); now is its clock (time.Now when nil).
func NewBus(retention time.Duration, now func() time.Time) *Bus {
	if retention <= 0 {
		retention = DefaultRetention
	}
	if now == nil {
		now = time.Now
	}
	return &Bus{retention: retention, now: now, sources: make(map[*busSource]struct{})}
}

// Publish appends an entry to the history and applies it to every attached Source.
func (b *Bus) Publish(ctx context.Context, stream string, fields map[string]string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publishing to %s: %w", stream, err)
	}
	if stream == "" {
		return errors.New("publishing: empty stream name")
	}
	e := busEntry{stream: stream, fields: maps.Clone(fields), at: b.now()}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trimLocked(e.at)
	if stream == StreamSessionsRevoke && IsHeartbeat(e.fields) {
		b.heartbeat = &e
	} else {
		b.history = append(b.history, e)
	}
	// Under the lock, so every source sees entries in the same order as the history.
	for s := range b.sources {
		s.apply(e.stream, e.fields)
	}
	return nil
}

// Attach applies the retained history to st (required) and ep (optional), then every
// entry published until the returned Source is closed. With a key, entries without a
// valid signature are dropped and counted.
func (b *Bus) Attach(st *RevokedSet, ep *Epochs, key []byte) Source {
	return b.AttachLogged(st, ep, key, nil)
}

// AttachLogged is Attach with a logger for dropped entries (zap.NewNop when nil).
func (b *Bus) AttachLogged(st *RevokedSet, ep *Epochs, key []byte, log *zap.Logger) Source {
	if log == nil {
		log = zap.NewNop()
	}
	return b.attach(st, ep, key, log, nil)
}

// attach builds a source, replays the retained history through it, then attaches it.
func (b *Bus) attach(st *RevokedSet, ep *Epochs, key []byte, log *zap.Logger, keys *KeyWatchers) Source {
	s := &busSource{bus: b, applier: applier{st: st, ep: ep, key: key, log: log, now: b.now, keys: keys}}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trimLocked(b.now())
	for _, e := range b.history {
		s.apply(e.stream, e.fields)
	}
	if b.heartbeat != nil {
		// Every entry published before it is in the history, so it holds for s too.
		s.apply(b.heartbeat.stream, b.heartbeat.fields)
	}
	b.sources[s] = struct{}{}
	return s
}

// trimLocked drops history older than the retention.
func (b *Bus) trimLocked(now time.Time) {
	horizon := now.Add(-b.retention)
	n := 0
	for n < len(b.history) && b.history[n].at.Before(horizon) {
		n++
	}
	if n > 0 {
		b.history = append(b.history[:0], b.history[n:]...)
	}
}

type busSource struct {
	bus *Bus
	applier
}

// Watermark is the newest watermark of the heartbeats published on the bus: an
// in-process bus cannot be out of reach, but without a publisher (an outbox relay in
// this process) nothing vouches that the state is complete.
func (s *busSource) Watermark() time.Time { return s.currentWatermark() }

// Lag is always 0: delivery is synchronous.
func (s *busSource) Lag() time.Duration { return 0 }

// Stats returns the counters; a bus source is synced from the start.
func (s *busSource) Stats() Stats {
	st := s.stats()
	st.Synced = true
	return st
}

// Close detaches the source; later entries no longer reach its RevokedSet.
func (s *busSource) Close() error {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	delete(s.bus.sources, s)
	return nil
}
