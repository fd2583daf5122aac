package caddymodules

import (
	"time"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

// freshnessCheckEvery is how often a handler looks at its revocation state's age to log
// changes; the requests themselves check it every time.
const freshnessCheckEvery = 250 * time.Millisecond

// watchFreshness logs a WARN, with the reason, when src's state turns stale (its
// watermark older than maxStaleness, or none), and an INFO when it is current again.
// At start the state has a grace of maxStaleness to become current, so a gateway whose
// first heartbeat is a few milliseconds away logs nothing. It returns the stop function.
func watchFreshness(log *zap.Logger, src revocation.Source, maxStaleness time.Duration) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(freshnessCheckEvery)
		defer t.Stop()
		start := time.Now()
		stale := false
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				wm := src.Watermark()
				isStale := wm.IsZero() || now.Sub(wm) > maxStaleness
				switch {
				case isStale && !stale && now.Sub(start) > maxStaleness:
					stale = true
					log.Warn("revocation state turned stale; refusing requests with 503", zap.String("reason", verify.StaleReason(src, now.Sub(wm))))
				case !isStale && stale:
					stale = false
					log.Info("revocation state is current again", zap.Duration("watermark_age", now.Sub(wm)))
				}
			}
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
