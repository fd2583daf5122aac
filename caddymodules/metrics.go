package caddymodules

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caracalgw/caracal/internal/caddyrevocation"
)

// metrics are the gateway's counters in Caddy's registry.
type metrics struct {
	allowed    prometheus.Counter
	refused    *prometheus.CounterVec
	streamsCut prometheus.Counter
	keyFetches *prometheus.CounterVec
}

// registerMetrics registers the counters, or reuses the ones a previous config (or
// another handler) registered: a config reload provisions handlers again.
func registerMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		allowed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "caracal", Subsystem: "gateway", Name: "requests_allowed_total",
			Help: "Requests whose mandate was accepted.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caracal", Subsystem: "gateway", Name: "requests_refused_total",
			Help: "Requests refused, by RFC 6750 error (missing, invalid_token, insufficient_scope, invalid_request, unavailable).",
		}, []string{"error"}),
		streamsCut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "caracal", Subsystem: "gateway", Name: "streams_aborted_total",
			Help: "Responses aborted because their mandate was revoked or expired mid-stream.",
		}),
		keyFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caracal", Subsystem: "gateway", Name: "key_fetches_total",
			Help: "Fetches of a zone's metadata and key set, by outcome (ok, dns, refused, timeout, x509, tls, network, status, body, metadata).",
		}, []string{"outcome"}),
	}
	if reg == nil {
		return m
	}
	m.allowed = register(reg, m.allowed).(prometheus.Counter)
	m.refused = register(reg, m.refused).(*prometheus.CounterVec)
	m.streamsCut = register(reg, m.streamsCut).(prometheus.Counter)
	m.keyFetches = register(reg, m.keyFetches).(*prometheus.CounterVec)
	register(reg, caddyrevocation.Collector{})
	return m
}

func register(reg *prometheus.Registry, c prometheus.Collector) prometheus.Collector {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector
		}
	}
	return c
}
