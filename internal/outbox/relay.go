// Package outbox publishes the store's outbox rows to the revocation streams.
//
// A revoke is acknowledged only after the store wrote it together with its outbox rows
// in one transaction; the Relay then publishes those rows, retrying until the publisher
// accepts them, so a revocation reaches the streams even if Redis was down when it
// happened (docs/protocol.md section 6).
//
// Relays sharing an outbox claim rows before publishing them (store.ClaimOutbox): one
// relay at a time holds a lease on the oldest pending rows, so a row goes out once and
// every stream stays in order. Delivery is still at least once: a row whose
// publication succeeded but could not be marked (the database failed in between), or
// whose lease lapsed while its relay was stuck, is published again. Consumers apply
// entries idempotently, so a duplicate changes nothing.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	// DefaultLease is how long a claim on outbox rows lasts: how soon another relay
	// takes over the rows of one that died.
	DefaultLease = 5 * time.Second
	// claimRetry is the pause before claiming again while another relay holds the
	// outbox: it is publishing, which takes milliseconds.
	claimRetry = 20 * time.Millisecond
)

// Options configures a Relay.
type Options struct {
	// Store holds the outbox. Required.
	Store store.Store
	// Publisher sends entries (Redis, or the in-process Bus). Required.
	Publisher revocation.Publisher
	// Key, when set, signs every entry (the sig field of docs/protocol.md section 6).
	Key []byte
	// Interval is how often pending rows are looked for without a Notify: the fallback
	// for rows written by another process (DefaultInterval when zero).
	Interval time.Duration
	// Batch is the number of rows read per store query (DefaultBatch when zero).
	Batch int
	// ID names this relay: the owner of its outbox claims (a random "relay-…" when
	// empty).
	ID string
	// Lease is how long a claim on outbox rows lasts (DefaultLease when zero). A relay
	// claims again, renewing its lease, once half of it has passed.
	Lease time.Duration
	// KeyRetention is how long a mandate signed by a key can stay valid after the key
	// is revoked (the STS's longest session or mandate lifetime plus leeway): when the
	// stream has lost its history the relay republishes the revocation of every key
	// revoked within it. Zero republishes no key revocation.
	KeyRetention time.Duration
	// HeartbeatInterval is how often a heartbeat is appended to
	// caracal.sessions.revoke (revocation.DefaultHeartbeatInterval when zero).
	HeartbeatInterval time.Duration
	// Logger receives publication failures; zap.NewNop when nil.
	Logger *zap.Logger
	// Now is the clock for publication times; time.Now when nil.
	Now func() time.Time
}

// Relay publishes outbox rows in order.
type Relay struct {
	o    Options
	wake chan struct{}
	hist history

	publishErrors, republications, republished atomic.Uint64

	hb heartbeatState // only the Run goroutine uses it

	mu      sync.Mutex
	started uint64        // number of the latest drain pass started
	done    uint64        // number of the latest drain pass that completed without error
	passed  chan struct{} // closed and replaced after each such pass
}

// New returns a Relay; call Run to start it.
func New(o Options) *Relay {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = revocation.DefaultHeartbeatInterval
	}
	if o.ID == "" {
		o.ID = "relay-" + randomHex(8)
	}
	return &Relay{o: o, wake: make(chan struct{}, 1), passed: make(chan struct{})}
}

// ID is the relay's name: the owner of its outbox claims.
func (r *Relay) ID() string { return r.o.ID }

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

// Run publishes pending rows until ctx is done. Each pass also keeps the streams'
// history checked, republishing from storage when it was lost (see republish.go), and
// appends a heartbeat after the first pass and every HeartbeatInterval (see beat).
// After a failure it retries with exponential backoff (up to 1 s); a Notify cuts the
// wait short.
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
		err := r.drain(ctx)
		if err == nil || errors.Is(err, store.ErrClaimed) {
			// While another relay publishes, this one still keeps its history checked
			// and its heartbeats going: their watermark counts the other relay's
			// claimed rows as pending.
			if herr := r.ensureHistory(ctx); herr != nil {
				err = herr
			} else if berr := r.beat(ctx); berr != nil {
				err = berr
			}
		}
		switch {
		case err == nil:
			if backoff > 0 {
				r.o.Logger.Info("publishing outbox rows and heartbeats again")
			}
			backoff = 0
			r.passCompleted(pass)
		case ctx.Err() != nil:
			return
		case errors.Is(err, store.ErrClaimed):
			// Another relay is publishing the oldest rows; they are not ours to wait for
			// with a backoff.
			next = claimRetry
		default:
			if backoff == 0 {
				backoff = minBackoff
			} else {
				backoff = min(2*backoff, maxBackoff)
			}
			next = backoff
			log := r.o.Logger.Debug
			if backoff == minBackoff {
				log = r.o.Logger.Warn
			}
			log("publishing outbox rows or heartbeat failed; will retry", zap.Duration("retry_in", next), zap.Error(err))
		}
		timer.Reset(next)
	}
}

// drain claims and publishes pending rows, a batch at a time, until none is left. It
// stops at the first failure so that rows go out in the order they were written, and
// claims again (renewing its lease) once half of the lease has passed.
func (r *Relay) drain(ctx context.Context) error {
	for {
		claimed := time.Now()
		rows, err := r.o.Store.ClaimOutbox(ctx, r.o.ID, r.o.Batch, r.o.Lease)
		if err != nil {
			return fmt.Errorf("claiming pending outbox rows: %w", err)
		}
		renew := false
		for _, row := range rows {
			if time.Since(claimed) > r.o.Lease/2 {
				renew = true
				break
			}
			if err := r.publish(ctx, row); err != nil {
				return err
			}
		}
		if !renew && len(rows) < r.o.Batch {
			return nil
		}
	}
}

func (r *Relay) publish(ctx context.Context, row store.OutboxEvent) error {
	fields := r.fields(row)
	if err := r.o.Publisher.Publish(ctx, row.Stream, fields); err != nil {
		r.publishErrors.Add(1)
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

// fields prepares a row for the stream (revocation.PublishFields: reason cleaned,
// signed with the relay's key).
func (r *Relay) fields(row store.OutboxEvent) map[string]string {
	return revocation.PublishFields(r.o.Key, row.Stream, row.Fields)
}
