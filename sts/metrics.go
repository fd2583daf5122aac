package sts

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caracalgw/caracal/internal/outbox"
)

var (
	descPending        = prometheus.NewDesc("caracal_outbox_pending_rows", "Outbox rows not yet published to the revocation streams.", []string{"relay"}, nil)
	descOldest         = prometheus.NewDesc("caracal_outbox_oldest_pending_age_seconds", "Age of the oldest unpublished outbox row (0 when none).", []string{"relay"}, nil)
	descPublishErrors  = prometheus.NewDesc("caracal_outbox_publish_errors_total", "Failed publications of outbox rows and republished entries.", []string{"relay"}, nil)
	descRepublications = prometheus.NewDesc("caracal_outbox_republications_total", "Republications of the live revocations after the stream lost its history.", []string{"relay"}, nil)
)

// relayCollector exports the backlog and counters of the relays that relays returns
// (the outbox relays running in this process). Registering it again after a reload
// changes nothing: the registry already has its series.
type relayCollector struct {
	relays func() []*outbox.Relay
}

func (relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPending, descOldest, descPublishErrors, descRepublications} {
		ch <- d
	}
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.relays() {
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
func registerRelayMetrics(reg *prometheus.Registry, relays func() []*outbox.Relay) {
	if reg != nil {
		_ = reg.Register(relayCollector{relays: relays})
	}
}
