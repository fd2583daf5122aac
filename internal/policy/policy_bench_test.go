package policy_test

import (
	"testing"

	"github.com/caracalgw/caracal/internal/policy"
)

// BenchmarkPolicyEval measures the policy gate on the token-exchange hot path: the
// default bundle with its shipped data, one zone, evaluated embedded.
func BenchmarkPolicyEval(b *testing.B) {
	// A roomy timeout: on a busy machine a scheduling stall must not turn into a
	// timeout deny and fail the run; the deadline is still armed on every call.
	e := newEngine()
	if err := e.Load(b.Context(), "acme", defaultBundle("acme", 1)); err != nil {
		b.Fatal(err)
	}
	allow := exchange("support-agent", "invoices:read", "invoices:write")
	deny := exchange("stranger", "invoices:read")
	delegated := exchange("helper", "invoices:read")
	delegated.Delegation = &policy.Delegation{
		EdgeID: "e-1", Path: []string{"e-1"}, HopCount: 1, Scopes: []string{"invoices:read"},
		ExpiresAt: delegated.Time + 600, Epoch: 7, RootClientID: "billing-agent",
	}

	for _, bc := range []struct {
		name  string
		in    *policy.Input
		allow bool
	}{
		{"allow", allow, true},
		{"deny", deny, false},
		{"delegated", delegated, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := e.Evaluate(b.Context(), "acme", bc.in); d.Allow != bc.allow {
					b.Fatalf("decision = %+v", d)
				}
			}
		})
	}

	// Parallel: many exchanges at once share the zone's prepared query.
	b.Run("allow/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if d := e.Evaluate(b.Context(), "acme", allow); !d.Allow {
					b.Errorf("decision = %+v", d)
					return
				}
			}
		})
	})
}
