package caddyrevocation

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caracalgw/caracal/revocation"
)

// live holds the running pipelines, which the metrics collector reads at scrape time.
var live = &pipelines{set: make(map[*Pipeline]struct{})}

type pipelines struct {
	mu  sync.Mutex
	set map[*Pipeline]struct{}
}

func (ps *pipelines) add(p *Pipeline) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.set[p] = struct{}{}
}

func (ps *pipelines) remove(p *Pipeline) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.set, p)
}

func (ps *pipelines) list() []*Pipeline {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]*Pipeline, 0, len(ps.set))
	for p := range ps.set {
		out = append(out, p)
	}
	return out
}

var (
	labels       = []string{"transport", "stream_prefix"}
	descWMAge    = prometheus.NewDesc("caracal_revocation_watermark_age_seconds", "Age of the newest heartbeat watermark applied (+Inf before the first): how stale the revocation state may be.", labels, nil)
	descLag      = prometheus.NewDesc("caracal_revocation_lag_seconds", "How far behind the stream the applied entries are, 0 when caught up.", labels, nil)
	descEntries  = prometheus.NewDesc("caracal_revocation_entries_total", "Stream entries read, by outcome (applied, heartbeat, bad_signature, malformed, duplicate).", append(labels, "outcome"), nil)
	descRebuilds = prometheus.NewDesc("caracal_revocation_rebuilds_total", "Rebuilds of the revocation state from the retention horizon.", labels, nil)
	descGaps     = prometheus.NewDesc("caracal_revocation_gaps_total", "Stream positions found lost (stream reset, unread entries trimmed).", labels, nil)
)

// Collector exports the revocation state of every running pipeline. It holds no state
// of its own, so registering it again after a reload (or from another module) is
// harmless: Register's AlreadyRegisteredError hands back the first one.
type Collector struct{}

// Describe implements prometheus.Collector.
func (Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWMAge, descLag, descEntries, descRebuilds, descGaps} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Pipelines sharing a transport and prefix
// (the local bus with and without a key) are reported together: the worst age and lag,
// the sum of the counters.
func (Collector) Collect(ch chan<- prometheus.Metric) {
	type agg struct {
		age, lag float64
		st       revocation.Stats
	}
	now := time.Now()
	groups := make(map[[2]string]*agg)
	for _, p := range live.list() {
		k := [2]string{p.Transport, p.prefix}
		g := groups[k]
		if g == nil {
			g = &agg{}
			groups[k] = g
		}
		age := math.Inf(1)
		if wm := p.Source.Watermark(); !wm.IsZero() {
			age = max(now.Sub(wm).Seconds(), 0)
		}
		g.age = max(g.age, age)
		g.lag = max(g.lag, p.Source.Lag().Seconds())
		st := p.Source.Stats()
		g.st.Applied += st.Applied
		g.st.Heartbeats += st.Heartbeats
		g.st.BadSignature += st.BadSignature
		g.st.Malformed += st.Malformed
		g.st.Duplicates += st.Duplicates
		g.st.Rebuilds += st.Rebuilds
		g.st.Gaps += st.Gaps
	}
	for k, g := range groups {
		lv := k[:]
		ch <- prometheus.MustNewConstMetric(descWMAge, prometheus.GaugeValue, g.age, lv...)
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, g.lag, lv...)
		for outcome, n := range map[string]uint64{
			"applied": g.st.Applied, "heartbeat": g.st.Heartbeats, "bad_signature": g.st.BadSignature,
			"malformed": g.st.Malformed, "duplicate": g.st.Duplicates,
		} {
			ch <- prometheus.MustNewConstMetric(descEntries, prometheus.CounterValue, float64(n), append(lv, outcome)...)
		}
		ch <- prometheus.MustNewConstMetric(descRebuilds, prometheus.CounterValue, float64(g.st.Rebuilds), lv...)
		ch <- prometheus.MustNewConstMetric(descGaps, prometheus.CounterValue, float64(g.st.Gaps), lv...)
	}
}
