package caddystore

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/caddyrevocation"
	"github.com/caracalgw/caracal/internal/outbox"
)

// relayRun is an outbox relay and the retention purge of one (storage, revocation
// pipeline) pair, shared by every started app that publishes there: a reload that keeps
// both settings keeps the running relay instead of starting a second one.
type relayRun struct {
	relay *outbox.Relay
	refs  int
	stop  context.CancelFunc
	done  chan struct{}
}

// relaySet holds a runtime's running relays by pipeline; its owner's mutex guards it.
type relaySet map[*caddyrevocation.Pipeline]*relayRun

// stopAll stops every relay of the set (the runtime is being destroyed).
func (s *relaySet) stopAll(mu *sync.Mutex) {
	mu.Lock()
	runs := *s
	*s = nil
	mu.Unlock()
	for _, run := range runs {
		run.stop()
		<-run.done
	}
}

// RelayOptions configures the relay StartRelay runs.
type RelayOptions struct {
	// Pipeline publishes the outbox rows (and heartbeats). Required.
	Pipeline *caddyrevocation.Handle
	// Horizon is the retention purge's horizon: the revocation retention (see
	// outbox.RetentionOptions.Horizon).
	Horizon time.Duration
	// KeyRetention is outbox.Options.KeyRetention: how far back revoked signing keys are
	// republished after the stream lost its history.
	KeyRetention time.Duration
	// Logger receives the relay's and the purge's failures.
	Logger *zap.Logger
}

// StartRelay runs the outbox relay and the retention purge that publish this storage's
// outbox through o.Pipeline, or takes a reference on the ones already running for the
// same pipeline (another app, or the configuration being replaced). Call StopRelay in
// the app's Stop. A reference holds at most one relay.
func (r *Runtime) StartRelay(o RelayOptions) error {
	if o.Pipeline == nil || o.Pipeline.Pipeline == nil {
		return errors.New("storage: the outbox relay needs a revocation pipeline")
	}
	if r.run != nil {
		return errors.New("storage: this reference already runs a relay")
	}
	sh := r.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if run := sh.relays[o.Pipeline.Pipeline]; run != nil {
		run.refs++
		r.run = run
		return nil
	}
	purger, err := outbox.NewRetention(outbox.RetentionOptions{Store: sh.gated, Horizon: o.Horizon, Logger: o.Logger})
	if err != nil {
		return err
	}
	relay := outbox.New(outbox.Options{Store: sh.gated, Publisher: o.Pipeline.Publisher, Key: o.Pipeline.Key, KeyRetention: o.KeyRetention, Logger: o.Logger})
	ctx, cancel := context.WithCancel(context.Background())
	run := &relayRun{relay: relay, refs: 1, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		var wg sync.WaitGroup
		wg.Go(func() { purger.Run(ctx) })
		relay.Run(ctx)
		wg.Wait()
	}()
	if sh.relays == nil {
		sh.relays = make(relaySet)
	}
	sh.relays[o.Pipeline.Pipeline] = run
	r.run = run
	return nil
}

// StopRelay drops this reference's relay; the relay stops when no started app uses it
// any more. Rows it did not publish stay in the outbox for the next relay.
func (r *Runtime) StopRelay() {
	if r == nil || r.run == nil {
		return
	}
	run := r.run
	r.run = nil
	sh := r.sh
	sh.mu.Lock()
	run.refs--
	last := run.refs == 0
	if last {
		for p, other := range sh.relays {
			if other == run {
				delete(sh.relays, p)
			}
		}
	}
	sh.mu.Unlock()
	if last {
		run.stop()
		<-run.done
	}
}

// relaysOf returns the runtime's running relays.
func (sh *shared) relaysOf() []*outbox.Relay {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	out := make([]*outbox.Relay, 0, len(sh.relays))
	for _, run := range sh.relays {
		out = append(out, run.relay)
	}
	return out
}

// Notify wakes the storage's running relays at once, after a write that produced
// outbox rows. It never blocks.
func (r *Runtime) Notify() {
	for _, relay := range r.sh.relaysOf() {
		relay.Notify()
	}
}

// errNoRelay: nothing in this process publishes the outbox right now (no caracal_sts
// app of this storage has started, or all have stopped).
var errNoRelay = errors.New("no outbox relay is running in this process")

// Flush waits until every outbox row committed before the call has been published (see
// outbox.Relay.Flush). Relays of one storage claim the outbox in turn, so a pass of
// any of them that completes covers every row.
func (r *Runtime) Flush(ctx context.Context) error {
	relays := r.sh.relaysOf()
	if len(relays) == 0 {
		return errNoRelay
	}
	return relays[0].Flush(ctx)
}

// RunningRelays returns the outbox relays running in this process, for metrics.
func RunningRelays() []*outbox.Relay {
	var out []*outbox.Relay
	pool.Range(func(_, value any) bool {
		out = append(out, value.(*shared).relaysOf()...)
		return true
	})
	return out
}
