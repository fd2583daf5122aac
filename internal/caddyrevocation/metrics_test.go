package caddyrevocation

import (
	"context"
	"crypto/rand"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/caracalgw/caracal/revocation"
)

func TestCollectorReportsTheWatermarkAgeAndOutcomes(t *testing.T) {
	// A key of this run of this test only, so heartbeats of other tests (and of earlier runs
	// under -count) on the process's local bus do not count.
	cfg := Config{Transport: "local", StreamKey: "metrics test " + rand.Text()}
	h, err := Open(context.Background(), cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector{})

	gauge := func(name string) (float64, bool) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[1].GetValue() == "local" && m.GetLabel()[0].GetValue() == "" {
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	heartbeats := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "caracal_revocation_entries_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				var local, hb bool
				for _, l := range m.GetLabel() {
					local = local || (l.GetName() == "transport" && l.GetValue() == "local")
					hb = hb || (l.GetName() == "outcome" && l.GetValue() == "heartbeat")
				}
				if local && hb {
					return m.GetCounter().GetValue()
				}
			}
		}
		t.Fatal("no heartbeat counter for the local transport")
		return 0
	}

	if age, ok := gauge("caracal_revocation_watermark_age_seconds"); !ok || !math.IsInf(age, 1) {
		t.Fatalf("watermark age before any heartbeat: %v, %v; want +Inf", age, ok)
	}
	before := heartbeats()
	now := time.Now()
	hb := revocation.Heartbeat{Publisher: "test-relay", Watermark: now, SentAt: now}
	if err := h.Publisher.Publish(context.Background(), revocation.StreamSessionsRevoke, hb.SignedFields(h.Key)); err != nil {
		t.Fatal(err)
	}
	// Pipelines of one transport report the worst age: other local pipelines of this
	// package may have no heartbeat, so only the counter is certain to move.
	if got := heartbeats(); got != before+1 {
		t.Fatalf("heartbeat counter %v, want %v", got, before+1)
	}
}
