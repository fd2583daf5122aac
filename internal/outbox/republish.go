package outbox

// Republication: the stream is a cache of storage.
//
// A transport that can lose its history (Redis: a restart without persistence, a
// failover, FLUSHALL) implements HistoryKeeper; revocation.RedisPublisher does. The
// in-process Bus cannot lose entries and needs none of this.
//
// Contract, for the heartbeat code:
//   - Run calls ensureHistory after every successful drain (at most one Redis check per
//     Interval). It adopts the generation marker in force at start; when the marker is
//     absent, or differs from the one this relay holds, or a stream ends below an id
//     this relay appended, the history is lost: the relay republishes from storage every
//     revocation that can still matter (store.LiveRevocations with
//     revocation.ExpiryGrace, every zone, and the caracal.keys revocation of every
//     signing key revoked within Options.KeyRetention), and only then sets a new marker
//     (SET NX; a marker another relay set meanwhile is adopted).
//   - Heartbeats go through Relay.PublishHeartbeat only. It refuses with
//     ErrHistoryPending until a generation is established, and the transport appends
//     the heartbeat only while the marker still equals that generation (atomically), so
//     no heartbeat ever vouches for a wiped stream. When the transport reports
//     revocation.ErrHistoryLost, the relay drops its generation and wakes Run, which
//     republishes.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// HistoryKeeper is a Publisher whose streams can lose their history and that marks a
// complete history with a generation marker (revocation.RedisPublisher).
type HistoryKeeper interface {
	revocation.Publisher
	// Generation returns the marker in force, "" when there is none.
	Generation(ctx context.Context) (string, error)
	// CheckGeneration returns an error wrapping revocation.ErrHistoryLost when the
	// history marked by generation may have lost entries.
	CheckGeneration(ctx context.Context, generation string) error
	// ClaimGeneration sets the marker to candidate unless one exists and returns the
	// marker in force.
	ClaimGeneration(ctx context.Context, candidate string) (string, error)
	// PublishHeartbeat appends a signed heartbeat only while the marker equals
	// generation, else returns an error wrapping revocation.ErrHistoryLost.
	PublishHeartbeat(ctx context.Context, generation string, fields map[string]string) error
}

// ErrHistoryPending: no heartbeat may be sent yet, because the relay has not
// established that the streams hold every live revocation (at start, or while it
// republishes after a loss).
var ErrHistoryPending = errors.New("stream history not established yet")

// history is the relay's view of the streams' generation.
type history struct {
	mu         sync.Mutex
	ready      bool
	generation string    // "" for a transport without history (the Bus)
	checked    time.Time // last successful check
}

func (h *history) current() (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.generation, h.ready
}

func (h *history) set(generation string) {
	h.mu.Lock()
	h.ready, h.generation, h.checked = true, generation, time.Now()
	h.mu.Unlock()
}

func (h *history) lose() {
	h.mu.Lock()
	h.ready = false
	h.mu.Unlock()
}

// due reports whether the history should be checked now.
func (h *history) due(interval time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.ready || time.Since(h.checked) >= interval
}

// Generation returns the generation the relay's heartbeats are bound to and whether it
// is established ("" and true for a transport that cannot lose history).
func (r *Relay) Generation() (string, bool) { return r.hist.current() }

// ensureHistory makes sure the streams hold every live revocation before heartbeats
// may go out; see the contract at the top of this file.
func (r *Relay) ensureHistory(ctx context.Context) error {
	hk, ok := r.o.Publisher.(HistoryKeeper)
	if !ok {
		r.hist.set("")
		return nil
	}
	if !r.hist.due(r.o.Interval) {
		return nil
	}
	gen, ready := r.hist.current()
	switch {
	case gen == "":
		// First check since start: a marker in force vouches for the streams.
		g, err := hk.Generation(ctx)
		if err != nil {
			return err
		}
		if g != "" {
			r.hist.set(g)
			return nil
		}
		r.o.Logger.Info("no stream generation marker; republishing live revocations from storage")
	case ready:
		err := hk.CheckGeneration(ctx, gen)
		if err == nil {
			r.hist.set(gen)
			return nil
		}
		if !errors.Is(err, revocation.ErrHistoryLost) {
			return err
		}
		r.hist.lose()
		r.o.Logger.Warn("revocation stream history lost; republishing live revocations from storage", zap.Error(err))
	}
	n, err := r.republish(ctx)
	if err != nil {
		return fmt.Errorf("republishing live revocations: %w", err)
	}
	g, err := hk.ClaimGeneration(ctx, newGeneration())
	if err != nil {
		return err
	}
	r.hist.set(g)
	r.republications.Add(1)
	r.o.Logger.Info("republished live revocations", zap.Int("entries", n), zap.String("generation", g))
	return nil
}

// republish appends, signed, a caracal.sessions.revoke entry for every revocation of
// every zone whose anchor can still appear in a valid mandate.
func (r *Relay) republish(ctx context.Context) (int, error) {
	zones, err := r.o.Store.ListZones(ctx)
	if err != nil {
		return 0, err
	}
	now := r.o.Now()
	n := 0
	for _, z := range zones {
		var cur store.RevocationCursor
		for {
			page, err := r.o.Store.LiveRevocations(ctx, z.ID, now, revocation.ExpiryGrace, cur, r.o.Batch)
			if err != nil {
				return n, err
			}
			for _, l := range page {
				if err := r.republishEntry(ctx, revocation.StreamSessionsRevoke, l.Fields()); err != nil {
					return n, err
				}
				n++
			}
			if len(page) < r.o.Batch {
				break
			}
			cur = page[len(page)-1].Cursor()
		}
		k, err := r.republishKeys(ctx, z.ID, now)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// republishKeys appends, signed, caracal.keys revoke entries for the zone's signing keys
// revoked within the key retention, so that a gateway still holding one of them in a
// key set fetched earlier refuses it although the original entry is gone. Each entry
// names up to revocation.MaxRevokedPerEntry kids; the current signing key is its kid,
// and it expires a key retention after the latest revocation it names.
func (r *Relay) republishKeys(ctx context.Context, zoneID string, now time.Time) (int, error) {
	if r.o.KeyRetention <= 0 {
		return 0, nil
	}
	revoked, err := r.o.Store.RevokedSigningKeys(ctx, zoneID, now.Add(-r.o.KeyRetention))
	if err != nil || len(revoked) == 0 {
		return 0, err
	}
	keys, err := r.o.Store.SigningKeys(ctx, zoneID, now)
	if err != nil {
		return 0, err
	}
	signing, ok := store.SigningKeyAt(keys, now)
	if !ok {
		return 0, fmt.Errorf("zone %s has no signing key", zoneID)
	}
	n := 0
	for chunk := range slices.Chunk(revoked, revocation.MaxRevokedPerEntry) {
		e := revocation.KeysEvent{ZoneID: zoneID, Event: revocation.KeysRevoke, KID: signing.KID, ActivatesAt: chunk[len(chunk)-1].RetiredAt,
			ExpiresAt: chunk[len(chunk)-1].RetiredAt.Add(r.o.KeyRetention)}
		for _, k := range chunk {
			e.Revoked = append(e.Revoked, k.KID)
		}
		if err := r.republishEntry(ctx, revocation.StreamKeys, e.Fields()); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// republishEntry signs and appends one republished entry to stream, and counts it.
func (r *Relay) republishEntry(ctx context.Context, stream string, fields map[string]string) error {
	if err := r.o.Publisher.Publish(ctx, stream, r.fields(store.OutboxEvent{Stream: stream, Fields: fields})); err != nil {
		r.publishErrors.Add(1)
		return err
	}
	r.republished.Add(1)
	return nil
}

func newGeneration() string { return randomHex(16) }

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// PublishHeartbeat signs a heartbeat's fields (revocation.Heartbeat.Fields) with the
// relay's key and appends it to caracal.sessions.revoke, bound to the relay's
// generation. It returns ErrHistoryPending while the history is not established, and
// an error wrapping revocation.ErrHistoryLost when the transport refused because the
// marker changed; the relay then republishes (Run is woken).
func (r *Relay) PublishHeartbeat(ctx context.Context, fields map[string]string) error {
	if !revocation.IsHeartbeat(fields) {
		return errors.New("publishing a heartbeat: the fields are not a heartbeat")
	}
	gen, ready := r.hist.current()
	if !ready {
		return ErrHistoryPending
	}
	signed := r.fields(store.OutboxEvent{Stream: revocation.StreamSessionsRevoke, Fields: fields})
	hk, ok := r.o.Publisher.(HistoryKeeper)
	if !ok {
		return r.o.Publisher.Publish(ctx, revocation.StreamSessionsRevoke, signed)
	}
	err := hk.PublishHeartbeat(ctx, gen, signed)
	if errors.Is(err, revocation.ErrHistoryLost) {
		r.hist.lose()
		r.Notify()
	}
	return err
}

// Stats are the relay's counters, for metrics.
type Stats struct {
	PublishErrors  uint64 // failed publications (outbox rows and republished entries)
	Republications uint64 // completed republications after a lost (or absent) history
	Republished    uint64 // entries appended by republications
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{
		PublishErrors:  r.publishErrors.Load(),
		Republications: r.republications.Load(),
		Republished:    r.republished.Load(),
	}
}

// Backlog returns the outbox's pending rows and the oldest one's creation time, by the
// database's clock, for metrics.
func (r *Relay) Backlog(ctx context.Context) (store.OutboxBacklog, error) {
	return r.o.Store.OutboxBacklog(ctx)
}
