package sts

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caracalgw/caracal/internal/outbox"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/revocation"
)

func TestRelayMetricsReportTheBacklog(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	t.Cleanup(func() { s.Close() })
	if err := s.CreateZone(ctx, store.Zone{ID: "z1", Name: "z1"}, store.SigningKey{KID: "k1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApplication(ctx, store.Application{ZoneID: "z1", ClientID: "agent", Name: "agent"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.CreateSession(ctx, store.Session{ZoneID: "z1", ID: "ses-1", ClientID: "agent", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeSession(ctx, "z1", "ses-1", "test", now); err != nil {
		t.Fatal(err)
	}
	// Not running: its row stays pending.
	relay := outbox.New(outbox.Options{Store: s, Publisher: revocation.NewBus(0, nil), ID: "relay-metrics-test"})

	reg := prometheus.NewRegistry()
	running := func() []*outbox.Relay { return []*outbox.Relay{relay} }
	registerRelayMetrics(reg, running)
	registerRelayMetrics(reg, running) // a reload registers again
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != "relay-metrics-test" {
				t.Fatalf("%s has labels %v", f.GetName(), m.GetLabel())
			}
			switch {
			case m.GetGauge() != nil:
				got[f.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				got[f.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	if got["caracal_outbox_pending_rows"] != 1 || got["caracal_outbox_publish_errors_total"] != 0 {
		t.Fatalf("metrics %v: want one pending row and no publish error", got)
	}
	if _, ok := got["caracal_outbox_oldest_pending_age_seconds"]; !ok || len(got) != 4 {
		t.Fatalf("metrics %v: want the four relay series", got)
	}
}
