// Package outbox publishes the store's outbox rows to the revocation streams.
//
// A revoke is acknowledged only after the store wrote it together with its outbox rows
// in one transaction; the Relay then publishes those rows, retrying until the publisher
// accepts them, so a revocation reaches the streams even if Redis was down when it
// happened (SPEC.md section 6).
//
// Delivery is at least once: a row whose publication succeeded but could not be marked
// (the database failed in between), or that two relays picked up at once, is published
// again. Consumers apply entries idempotently, so a duplicate changes nothing.
package outbox

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// Defaults of Options.
const (
	DefaultInterval = time.Second
	DefaultBatch    = 100
	minBackoff      = 100 * time.Millisecond
	// maxBackoff is short: while the relay waits, heartbeats stop and every verifier
	// turns stale, so a returning publisher must be used at once.
	maxBackoff = time.Second
)

// Options configures a Relay.
type Options struct {
	// Store holds the outbox. Required.
	Store store.Store
	// Publisher sends entries (Redis, or the in-process Bus). Required.
	Publisher revocation.Publisher
	// Key, when set, signs every entry (the sig field of SPEC.md section 6).
	Key []byte
	// Interval is how often pending rows are looked for without a Notify: the fallback
	// for rows written by another process (DefaultInterval when zero).
	Interval time.Duration
	// Batch is the number of rows read per store query (DefaultBatch when zero).
	Batch int
	// HeartbeatInterval is how often a heartbeat is appended to
	// caracal.sessions.revoke (revocation.DefaultHeartbeatInterval when zero).
	HeartbeatInterval time.Duration
	// Name is the publisher name of the heartbeats (a random one when empty).
	Name string
	// Logger receives publication failures; zap.NewNop when nil.
	Logger *zap.Logger
	// Now is the clock for publication times; time.Now when nil.
	Now func() time.Time
}

// Relay publishes outbox rows in order.
type Relay struct {
	o    Options
	wake chan struct{}

	mu      sync.Mutex
	started uint64        // number of the latest drain pass started
	done    uint64        // number of the latest drain pass that completed without error
	passed  chan struct{} // closed and replaced after each such pass

	hb heartbeatState
}

// New returns a Relay; call Run to start it.
func New(o Options) *Relay {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = revocation.DefaultHeartbeatInterval
	}
	if o.Name == "" {
		o.Name = newRelayName()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Relay{o: o, wake: make(chan struct{}, 1), passed: make(chan struct{})}
}

// Flush wakes the relay and waits until a drain pass that started after the call has
// completed without error: every row committed before the call was then published,
// by this relay or an earlier pass. It returns ctx's error when ctx ends first (the
// rows stay pending and the relay keeps trying).
func (r *Relay) Flush(ctx context.Context) error {
	r.mu.Lock()
	// A pass in flight may have read the outbox before the caller's rows were
	// committed, so only a pass that starts from now on counts. Notify makes one start
	// at once, or right after the one in flight.
	target := r.started + 1
	r.mu.Unlock()
	r.Notify()
	for {
		r.mu.Lock()
		done, ch := r.done >= target, r.passed
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (r *Relay) passStarted() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started++
	return r.started
}

func (r *Relay) passCompleted(n uint64) {
	r.mu.Lock()
	r.done = n
	close(r.passed)
	r.passed = make(chan struct{})
	r.mu.Unlock()
}

// Notify wakes the relay at once. Call it right after a local revocation so that
// propagation does not wait for the poll interval. It never blocks.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes pending rows until ctx is done, and a heartbeat after the first pass
// and every HeartbeatInterval (see beat). After a failure it retries with exponential
// backoff (up to 1 s); a Notify cuts the wait short.
func (r *Relay) Run(ctx context.Context) {
	var backoff time.Duration
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.wake:
		}
		next := min(r.o.Interval, r.o.HeartbeatInterval)
		pass := r.passStarted()
		mark, err := r.drain(ctx)
		if err == nil {
			r.passCompleted(pass)
			err = r.beat(ctx, mark)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log := r.o.Logger.Debug
			if backoff == 0 {
				backoff = minBackoff
				log = r.o.Logger.Warn
			} else {
				backoff = min(2*backoff, maxBackoff)
			}
			next = backoff
			log("publishing outbox rows or heartbeat failed; will retry", zap.Duration("retry_in", next), zap.Error(err))
		} else {
			if backoff > 0 {
				r.o.Logger.Info("publishing outbox rows and heartbeats again")
			}
			backoff = 0
		}
		timer.Reset(next)
	}
}

// drain publishes pending rows, a batch at a time, until none is left. It stops at the
// first failure so that rows go out in the order they were written. On success it
// returns the instant just before its last query: every row committed before it has
// been published.
func (r *Relay) drain(ctx context.Context) (time.Time, error) {
	for {
		at := r.o.Now()
		rows, err := r.o.Store.PendingOutbox(ctx, r.o.Batch)
		if err != nil {
			return time.Time{}, fmt.Errorf("reading pending outbox rows: %w", err)
		}
		for _, row := range rows {
			if err := r.publish(ctx, row); err != nil {
				return time.Time{}, err
			}
		}
		if len(rows) < r.o.Batch {
			return at, nil
		}
	}
}

func (r *Relay) publish(ctx context.Context, row store.OutboxEvent) error {
	fields := r.fields(row)
	if err := r.o.Publisher.Publish(ctx, row.Stream, fields); err != nil {
		if markErr := r.o.Store.MarkAttempt(ctx, row.ZoneID, row.ID); markErr != nil {
			r.o.Logger.Warn("counting a failed outbox publication", zap.Int64("id", row.ID), zap.Error(markErr))
		}
		return fmt.Errorf("publishing outbox row %d to %s: %w", row.ID, row.Stream, err)
	}
	if err := r.o.Store.MarkPublished(ctx, row.ZoneID, row.ID, r.o.Now()); err != nil {
		return fmt.Errorf("marking outbox row %d published: %w", row.ID, err)
	}
	return nil
}

// fields prepares a row for the stream: the reason is cleaned so that strict
// consumers accept it (a dropped revocation would be far worse than an altered
// reason), then the entry is signed.
func (r *Relay) fields(row store.OutboxEvent) map[string]string {
	fields := maps.Clone(row.Fields)
	if fields == nil {
		fields = make(map[string]string)
	}
	delete(fields, "sig")
	if reason, ok := fields["reason"]; ok && row.Stream == revocation.StreamSessionsRevoke {
		fields["reason"] = revocation.CleanReason(reason)
	}
	if len(r.o.Key) > 0 {
		fields["sig"] = revocation.Sign(r.o.Key, row.Stream, fields)
	}
	return fields
}
