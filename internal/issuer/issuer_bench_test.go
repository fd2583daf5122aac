package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

// benchClients is the number of concurrent in-process clients of the issuance benchmarks.
const benchClients = 32

// latencies collects per-operation durations from parallel workers.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	q := func(p float64) float64 {
		return float64(l.all[int(p*float64(len(l.all)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// parallel runs op from benchClients goroutines, reporting ops/s and latency quantiles.
func parallel(b *testing.B, op func() error) {
	b.Helper()
	var lat latencies
	procs := max(1, benchClients/runtime.GOMAXPROCS(0))
	b.SetParallelism(procs)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if err := op(); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		lat.add(mine)
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
	lat.report(b)
}

// BenchmarkIssuance compares, in one run, the raw ES256 signing rate (the physical limit of
// issuance here) with complete token exchanges (form parsing, subject verification, session
// and resource lookup, policy evaluation, signing) on the memory store and on PostgreSQL,
// each at 32 concurrent in-process clients.
//
// The process collects garbage as the caracal binary does (GOGC=400 unless GOGC is set;
// see cmd/caracal): with Go's default the tiny heap of a benchmark process is collected
// hundreds of times a second and the p99 measures the collector, not the STS.
func BenchmarkIssuance(b *testing.B) {
	if _, set := os.LookupEnv("GOGC"); !set {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	b.Run("raw-es256-sign", func(b *testing.B) {
		key, err := mandate.GenerateKey()
		if err != nil {
			b.Fatal(err)
		}
		digest := sha256.Sum256([]byte("caracal benchmark payload of a typical mandate size"))
		parallel(b, func() error {
			_, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
			return err
		})
	})
	for _, kind := range []string{"memory", "postgres"} {
		for _, hops := range []int{0, 1, 3, 10} {
			name := "exchange-" + kind
			if hops > 0 {
				name = fmt.Sprintf("delegated-%dhop-%s", hops, kind)
			}
			b.Run(name, func(b *testing.B) {
				var st store.Store = memory.New()
				if kind == "postgres" {
					st = openPostgres(b)
					testenv.EmptyDatabase(b, databaseURL)
				}
				// As deployed: state is read through the revocation feed.
				epochs := new(revocation.Epochs)
				e := newEnv(b, st, func(o *Options) { o.Revocations, o.Epochs = revocation.NewRevokedSet(o.Now), epochs })
				form := exchangeForm(e.session("demo", "agent"), "scope", "read")
				if hops > 0 {
					form = delegatedForm(b, e, hops, epochs)
				}
				body := form.Encode()
				parallel(b, func() error {
					req := httptest.NewRequest(http.MethodPost, "https://sts.test/zones/demo/oauth2/token", strings.NewReader(body))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					rec := httptest.NewRecorder()
					e.svc.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						return &benchError{rec.Code, rec.Body.String()}
					}
					return nil
				})
			})
		}
	}
}

// delegatedForm builds a chain of hops edges (agent's session at the root, alternating
// agent and reader sessions below, max_hops shrinking by one per hop) and returns the
// exchange form of the leaf's target session. The invalidation entries of the creations
// reach epochs as the feed would deliver them.
func delegatedForm(b *testing.B, e *env, hops int, epochs *revocation.Epochs) url.Values {
	ctx := context.Background()
	clients := []string{"agent", "reader"}
	var tokens, sids []string
	for i := 0; i <= hops; i++ {
		tok := e.session("demo", clients[i%2])
		tokens = append(tokens, tok)
		sids = append(sids, claimsOf(b, tok).SID)
	}
	parent := ""
	for i := range hops {
		edge, err := e.store.CreateEdge(ctx, store.Edge{
			ZoneID: "demo", ID: fmt.Sprintf("bench-%d", i), SourceSessionID: sids[i], TargetSessionID: sids[i+1],
			Resource: apiResource, Scopes: []string{"read"}, ExpiresAt: e.clock.Now().Add(time.Hour),
			MaxHops: hops - i, ParentEdgeID: parent,
		}, nil)
		if err != nil {
			b.Fatal(err)
		}
		parent = edge.ID
	}
	pending, err := e.store.PendingOutbox(ctx, 1000)
	if err != nil {
		b.Fatal(err)
	}
	for _, row := range pending {
		if row.Stream == store.StreamDelegationInvalidate {
			ev, err := revocation.ParseEpochEvent(row.Fields)
			if err != nil {
				b.Fatal(err)
			}
			epochs.Observe(ev)
		}
	}
	return exchangeForm(tokens[hops], "scope", "read", "delegation_edge_id", parent)
}

// BenchmarkClientCredentials measures the session grant on the cached-verification path
// (the Argon2 result of a recent success is reused), memory store.
func BenchmarkClientCredentials(b *testing.B) {
	e := newEnv(b, nil)
	e.session("demo", "agent") // warms the verification cache
	body := url.Values{"grant_type": {GrantClientCreds}}.Encode()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "https://sts.test/zones/demo/oauth2/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("agent", "demo-agent-secret")
		rec := httptest.NewRecorder()
		e.svc.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code, rec.Body)
		}
	}
}

type benchError struct {
	code int
	body string
}

func (e *benchError) Error() string { return http.StatusText(e.code) + ": " + e.body }
