package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// Defaults of RetentionOptions.
const (
	DefaultRetentionInterval = time.Hour
	DefaultRetentionBatch    = 500
)

// RetentionOptions configures a Retention runner.
type RetentionOptions struct {
	// Store is purged. Required.
	Store store.Store
	// Interval between purges (DefaultRetentionInterval when zero). The first purge
	// runs when Run starts.
	Interval time.Duration
	// Horizon: published outbox rows older than this are deleted, and sessions and
	// edges whose expiry is older than Horizon plus Grace (revocation.DefaultRetention
	// when zero). Keep it at least the stream retention, so that storage outlives
	// whatever the streams still carry.
	Horizon time.Duration
	// Grace is added to Horizon for sessions and edges (revocation.ExpiryGrace when
	// zero): a revocation must outlive every mandate its anchor can appear in.
	Grace time.Duration
	// Batch is the number of records one statement deletes (DefaultRetentionBatch
	// when zero); each batch is its own short transaction.
	Batch int
	// Logger receives failures and what each purge deleted; zap.NewNop when nil.
	Logger *zap.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Retention deletes what no longer matters, on a schedule: published outbox rows past
// the horizon, and inactive edges and sessions expired for longer than the horizon
// plus the grace. Rows still pending, active edges and anything another record
// references are kept (see store.Store.PurgeExpired). The streams themselves are
// trimmed by the publisher (MINID on every XADD).
type Retention struct {
	o RetentionOptions
}

// Purged counts what one purge deleted.
type Purged struct {
	OutboxRows int
	Records    int // edges and sessions
}

// NewRetention returns a runner; call Run to start it.
func NewRetention(o RetentionOptions) (*Retention, error) {
	if o.Store == nil {
		return nil, errors.New("retention: no store")
	}
	if o.Interval < 0 || o.Horizon < 0 || o.Grace < 0 || o.Batch < 0 {
		return nil, errors.New("retention: interval, horizon, grace and batch must not be negative")
	}
	if o.Interval == 0 {
		o.Interval = DefaultRetentionInterval
	}
	if o.Horizon == 0 {
		o.Horizon = revocation.DefaultRetention
	}
	if o.Grace == 0 {
		o.Grace = revocation.ExpiryGrace
	}
	if o.Batch == 0 {
		o.Batch = DefaultRetentionBatch
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Retention{o: o}, nil
}

// Run purges at once and then every Interval until ctx is done. A failed purge is
// logged and retried at the next interval.
func (r *Retention) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, err := r.Purge(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.o.Logger.Warn("retention purge failed; will retry", zap.Duration("retry_in", r.o.Interval), zap.Error(err))
		case p.OutboxRows+p.Records > 0:
			r.o.Logger.Info("retention purge", zap.Int("outbox_rows", p.OutboxRows), zap.Int("sessions_and_edges", p.Records))
		}
		t.Reset(r.o.Interval)
	}
}

// Purge runs one purge to completion, a batch at a time.
func (r *Retention) Purge(ctx context.Context) (Purged, error) {
	var p Purged
	now := r.o.Now()
	for {
		n, err := r.o.Store.PurgeOutbox(ctx, now.Add(-r.o.Horizon), r.o.Batch)
		p.OutboxRows += n
		if err != nil {
			return p, fmt.Errorf("purging the outbox: %w", err)
		}
		if n < r.o.Batch {
			break
		}
	}
	zones, err := r.o.Store.ListZones(ctx)
	if err != nil {
		return p, fmt.Errorf("listing zones to purge: %w", err)
	}
	cutoff := now.Add(-r.o.Horizon - r.o.Grace)
	for _, z := range zones {
		// A batch that deletes nothing ends the zone; one that deletes edges may free
		// their parents and sessions for the next.
		for {
			n, err := r.o.Store.PurgeExpired(ctx, z.ID, cutoff, r.o.Batch)
			p.Records += n
			if err != nil {
				return p, fmt.Errorf("purging zone %s: %w", z.ID, err)
			}
			if n == 0 {
				break
			}
		}
	}
	return p, nil
}
