package issuer

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/secret"
	"github.com/caracalgw/caracal/internal/store"
)

// floodSamples is the number of legitimate first-time authentications timed per phase; each costs
// one production Argon2 run, so the p99 of a phase is its slowest sample.
const floodSamples = 10

// floodPause is what each flood worker waits between requests, standing in for the network round
// trip of a remote attacker: without it 32 in-process goroutines spinning on instant refusals take
// the benchmark machine's CPU from the Argon2 runs, which measures the attacker's CPU, not the STS.
const floodPause = 2 * time.Millisecond

// BenchmarkAuthUnderFlood times a legitimate client's first authentication (an uncached secret,
// one production-cost Argon2id run: m=64 MiB, t=3, p=4) with the production verifier defaults,
// first with no flood, then during a 32-worker flood of unknown client ids, then during a 32-worker
// flood of wrong secrets for another client of the same zone. Every flood request comes from a new
// source address, so the per-source lockouts never stop it and only the fair queue protects the
// legitimate client: the worst case for this design. Ratios are against the no-flood phase of the
// same run.
func BenchmarkAuthUnderFlood(b *testing.B) {
	v, err := secret.NewVerifier(secret.VerifierOptions{})
	if err != nil {
		b.Fatal(err)
	}
	e := newEnv(b, nil, func(o *Options) { o.Secrets = v })
	phc, err := secret.Hash("legit-secret")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := e.store.PutApplication(ctx, store.Application{ZoneID: "demo", ClientID: "victim", Name: "victim", SecretHash: phc, CreatedAt: e.clock.Now()}); err != nil {
		b.Fatal(err)
	}
	floods := map[string]func(worker, n int) (client, secret string){
		"none":          nil,
		"unknown-ids":   func(w, n int) (string, string) { return fmt.Sprintf("ghost-%d-%d", w, n), "guess" },
		"wrong-secrets": func(w, n int) (string, string) { return "victim", fmt.Sprintf("wrong-%d-%d", w, n) },
	}
	phases := []string{"none", "unknown-ids", "wrong-secrets"}
	samples := map[string][]time.Duration{}
	var apps, refused int
	var flooded atomic.Int64
	runsPerPhase := map[string]uint64{}
	for b.Loop() {
		for _, phase := range phases {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if f := floods[phase]; f != nil {
				for w := range benchClients {
					wg.Go(func() {
						for n := 0; ; n++ {
							select {
							case <-stop:
								return
							default:
							}
							client, sec := f(w, n)
							e.auth("demo", client, sec, fmt.Sprintf("10.%d.%d.%d", w, n>>8&255, n&255))
							flooded.Add(1)
							time.Sleep(floodPause)
						}
					})
				}
				// Let the flood fill the queue before timing.
				for before := v.Runs(); v.Runs() < before+4; {
					time.Sleep(time.Millisecond)
				}
			}
			runs := v.Runs()
			for range floodSamples {
				apps++
				id := fmt.Sprintf("legit-%d", apps)
				if err := e.store.PutApplication(ctx, store.Application{ZoneID: "demo", ClientID: id, Name: id, SecretHash: phc, CreatedAt: e.clock.Now()}); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				rec := e.auth("demo", id, "legit-secret", "192.0.2.200")
				samples[phase] = append(samples[phase], time.Since(t0))
				if rec.Code != http.StatusOK {
					refused++
					b.Errorf("%s: legitimate client refused: %d %s", phase, rec.Code, rec.Body)
				}
			}
			runsPerPhase[phase] += v.Runs() - runs
			close(stop)
			wg.Wait()
		}
	}
	quantile := func(d []time.Duration, p float64) float64 {
		s := slices.Sorted(slices.Values(d))
		return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1e3
	}
	base50, base99 := quantile(samples["none"], 0.5), quantile(samples["none"], 0.99)
	for _, phase := range phases {
		p50, p99 := quantile(samples[phase], 0.5), quantile(samples[phase], 0.99)
		b.ReportMetric(p50, phase+"-p50-ms")
		b.ReportMetric(p99, phase+"-p99-ms")
		b.ReportMetric(float64(runsPerPhase[phase])/float64(len(samples[phase])), phase+"-argon2/legit")
		if phase != "none" {
			b.ReportMetric(p50/base50, phase+"-p50-ratio")
			b.ReportMetric(p99/base99, phase+"-p99-ratio")
		}
	}
	b.ReportMetric(float64(refused), "legit-refused")
	b.ReportMetric(float64(flooded.Load()), "flood-requests")
}
