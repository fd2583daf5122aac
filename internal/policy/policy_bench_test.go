package policy_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

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

// BenchmarkEvaluateWhileCompiling measures one zone's evaluation latency with no
// compilation running and then while another zone's 1 MiB, 19,000-rule bundle is
// uploaded (compiled) over and over, in the same run, and reports the ratio.
// "default" keeps the default limits (the upload is refused by size before any
// parsing); "raised" lifts them so that the bundle really compiles in the pool.
func BenchmarkEvaluateWhileCompiling(b *testing.B) {
	big := withRules(19_000, 55)
	for _, bc := range []struct {
		name   string
		limits policy.Limits
	}{
		{"default", policy.Limits{}},
		{"raised", policy.Limits{MaxBundleBytes: 2 << 20, MaxRules: 20_000, CompileTimeout: time.Minute}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := policy.NewCompiler(policy.CompilerOptions{Limits: bc.limits})
			e := policy.NewEmbedded(policy.EmbeddedOptions{Timeout: roomy, Compiler: c})
			if err := e.Load(b.Context(), "acme", defaultBundle("acme", 1)); err != nil {
				b.Fatal(err)
			}
			in := exchange("support-agent", "invoices:read", "invoices:write")
			run := func() []time.Duration {
				lat := make([]time.Duration, 0, b.N)
				for range b.N {
					start := time.Now()
					if d := e.Evaluate(b.Context(), "acme", in); !d.Allow {
						b.Fatalf("decision = %+v", d)
					}
					lat = append(lat, time.Since(start))
				}
				return lat
			}
			idle := run()

			ctx, cancel := context.WithCancel(b.Context())
			var compiled, refused atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for ctx.Err() == nil {
					if _, err := c.Compile(ctx, "globex", big, nil); err == nil {
						compiled.Add(1)
					} else if errors.Is(err, policy.ErrLimit) {
						refused.Add(1)
					}
				}
			}()
			busy := run()
			cancel()
			<-done

			mean := func(l []time.Duration) float64 {
				var sum time.Duration
				for _, d := range l {
					sum += d
				}
				return float64(sum) / float64(len(l))
			}
			p99 := func(l []time.Duration) float64 {
				slices.Sort(l)
				return float64(l[len(l)*99/100])
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(mean(idle), "idle-ns/eval")
			b.ReportMetric(mean(busy), "compiling-ns/eval")
			b.ReportMetric(mean(busy)/mean(idle), "mean-ratio")
			b.ReportMetric(p99(busy)/p99(idle), "p99-ratio")
			b.ReportMetric(float64(compiled.Load()), "compiled")
			b.ReportMetric(float64(refused.Load()), "refused")
		})
	}
}
