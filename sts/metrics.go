package sts

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caracalgw/caracal/internal/outbox"
)

// runningRelays holds the outbox relays of started STS apps; the collector reads them at
// scrape time. During a reload the old and the new app's relays overlap briefly.
var runningRelays = struct {
	mu  sync.Mutex
	set map[*outbox.Relay]struct{}
}{set: make(map[*outbox.Relay]struct{})}

func trackRelay(r *outbox.Relay, running bool) {
	runningRelays.mu.Lock()
	defer runningRelays.mu.Unlock()
	if running {
		runningRelays.set[r] = struct{}{}
	} else {
		delete(runningRelays.set, r)
	}
}

var (
	descPending        = prometheus.NewDesc("caracal_outbox_pending_rows", "Outbox rows not yet published to the revocation streams.", []string{"relay"}, nil)
	descOldest         = prometheus.NewDesc("caracal_outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox row (0 when none).", []string{"relay"}, nil)
	descPublishErrors  = prometheus.NewDesc("caracal_outbox_publish_errors_total", "Failed publications of outbox rows and republished entries.", []string{"relay"}, nil)
	descRepublications = prometheus.NewDesc("caracal_outbox_republications_total", "Republications of the live revocations after the stream lost its history.", []string{"relay"}, nil)
)

// relayCollector exports the running relays' backlog and counters. It holds no state,
// so registering it again after a reload is harmless.
type relayCollector struct{}

func (relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPending, descOldest, descPublishErrors, descRepublications} {
		ch <- d
	}
}

func (relayCollector) Collect(ch chan<- prometheus.Metric) {
	runningRelays.mu.Lock()
	relays := make([]*outbox.Relay, 0, len(runningRelays.set))
	for r := range runningRelays.set {
		relays = append(relays, r)
	}
	runningRelays.mu.Unlock()
	for _, r := range relays {
		id := r.ID()
		st := r.Stats()
		ch <- prometheus.MustNewConstMetric(descPublishErrors, prometheus.CounterValue, float64(st.PublishErrors), id)
		ch <- prometheus.MustNewConstMetric(descRepublications, prometheus.CounterValue, float64(st.Republications), id)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		b, err := r.Backlog(ctx)
		cancel()
		if err != nil {
			// Storage unreachable: no backlog figure rather than a wrong one.
			continue
		}
		age := 0.0
		if !b.Oldest.IsZero() {
			age = max(b.Now.Sub(b.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(b.Pending), id)
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age, id)
	}
}

// registerRelayMetrics adds the relay collector to Caddy's registry. After a reload the
// collector is already there: Register then fails with AlreadyRegisteredError, which
// changes nothing.
func registerRelayMetrics(reg *prometheus.Registry) {
	if reg != nil {
		_ = reg.Register(relayCollector{})
	}
}
