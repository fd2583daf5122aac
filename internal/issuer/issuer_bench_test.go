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
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/policy"
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

// issuanceSessions is how many sessions (each its own subject token) the exchange rows of
// BenchmarkIssuance cycle through.
const issuanceSessions = 2000

// readCounter wraps a store and counts the reads an exchange may make, so a benchmark
// reports how often it reached storage rather than a cache.
type readCounter struct {
	store.Store
	reads atomic.Int64
}

func (r *readCounter) GetZone(ctx context.Context, zoneID string) (store.Zone, error) {
	r.reads.Add(1)
	return r.Store.GetZone(ctx, zoneID)
}

func (r *readCounter) GetApplication(ctx context.Context, zoneID, clientID string) (store.Application, error) {
	r.reads.Add(1)
	return r.Store.GetApplication(ctx, zoneID, clientID)
}

func (r *readCounter) GetResource(ctx context.Context, zoneID, identifier string) (store.Resource, error) {
	r.reads.Add(1)
	return r.Store.GetResource(ctx, zoneID, identifier)
}

func (r *readCounter) SigningKeys(ctx context.Context, zoneID string, now time.Time) ([]store.SigningKey, error) {
	r.reads.Add(1)
	return r.Store.SigningKeys(ctx, zoneID, now)
}

func (r *readCounter) ActivePolicyBundle(ctx context.Context, zoneID string) (store.PolicyBundle, error) {
	r.reads.Add(1)
	return r.Store.ActivePolicyBundle(ctx, zoneID)
}

func (r *readCounter) GetSession(ctx context.Context, zoneID, sid string) (store.Session, error) {
	r.reads.Add(1)
	return r.Store.GetSession(ctx, zoneID, sid)
}

func (r *readCounter) Sessions(ctx context.Context, zoneID string, ids []string) (map[string]store.Session, error) {
	r.reads.Add(1)
	return r.Store.Sessions(ctx, zoneID, ids)
}

func (r *readCounter) EdgePath(ctx context.Context, zoneID, edgeID string) ([]store.Edge, error) {
	r.reads.Add(1)
	return r.Store.EdgePath(ctx, zoneID, edgeID)
}

func (r *readCounter) Epoch(ctx context.Context, zoneID string) (int64, error) {
	r.reads.Add(1)
	return r.Store.Epoch(ctx, zoneID)
}

// benchEnv is the STS of one BenchmarkIssuance row with its store's counters.
type benchEnv struct {
	*env
	reads *readCounter
	// skew is how far the STS's clock has been moved ahead of the wall clock, in
	// nanoseconds.
	skew atomic.Int64
}

// advance moves the STS's clock forward by d.
func (e *benchEnv) advance(d time.Duration) { e.skew.Add(int64(d)) }

// newBenchEnv builds the STS as deployed for a benchmark over a store of kind (memory or
// postgres, emptied first): state read through the revocation feed, a policy timeout
// long enough that a starved evaluation on a loaded machine is measured rather than
// failed, and, unless frozen, a clock that runs at wall-clock speed from the harness's
// start time (and can be moved further ahead with advance), so the session, resource and
// zone caches expire after the refresh interval as they do in a running process.
func newBenchEnv(b *testing.B, kind string, frozen bool, epochs *revocation.Epochs) *benchEnv {
	b.Helper()
	var st store.Store = memory.New()
	if kind == "postgres" {
		st = openPostgres(b)
		testenv.EmptyDatabase(b, databaseURL)
	}
	be := &benchEnv{reads: &readCounter{Store: st}}
	be.env = newEnv(b, be.reads, func(o *Options) {
		if !frozen {
			base, start := o.Now(), time.Now()
			o.Now = func() time.Time { return base.Add(time.Since(start) + time.Duration(be.skew.Load())) }
		}
		o.Revocations, o.Epochs = revocation.NewRevokedSet(o.Now), epochs
		o.Policy = policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Minute})
	})
	return be
}

// tokenRequest posts body to the token endpoint of zone demo.
func (e *benchEnv) tokenRequest(body string, basic ...string) error {
	req := httptest.NewRequest(http.MethodPost, "https://sts.test/zones/demo/oauth2/token", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if len(basic) == 2 {
		req.SetBasicAuth(basic[0], basic[1])
	}
	rec := httptest.NewRecorder()
	e.svc.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return &benchError{rec.Code, rec.Body.String()}
	}
	return nil
}

// perOp reports the store reads and writes of the row per operation.
func (e *benchEnv) perOp(b *testing.B, run func()) {
	reads, writes := e.reads.reads.Load(), e.store.writes.Load()
	run()
	b.ReportMetric(float64(e.reads.reads.Load()-reads)/float64(b.N), "store-reads/op")
	b.ReportMetric(float64(e.store.writes.Load()-writes)/float64(b.N), "store-writes/op")
}

// BenchmarkIssuance compares, in one run, the raw ES256 signing rate (the physical limit of
// issuance here) with complete token exchanges (form parsing, subject verification, session
// and resource lookup, policy evaluation, signing) on the memory store and on PostgreSQL,
// each at 32 concurrent in-process clients. Every row reports the store reads and writes
// it made per operation.
//
//   - exchange-*: 2,000 sessions, each exchange presenting the next one's session mandate,
//     with a clock that moves by the refresh interval every 2,000 exchanges on top of the
//     wall clock: each session's cached row has expired by its next use, as for a
//     deployment's sessions that exchange less often than every refresh interval, so
//     every exchange reads its session from storage, and the zone's keys, policy version
//     and resource are read again every refresh interval.
//   - exchange-cache-hit-*: one session and a frozen clock: every exchange after the
//     first is served by the caches (the best case, not a deployment's).
//   - session-grant-cached-secret-*: client_credentials, each creating a session row; the
//     secret's verification is a hit of the recent-success cache.
//   - delegated-Nhop-one-chain-*: exchanges over one delegation chain of N edges.
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
		// Built once per store and shared by the b.N rounds of its first two rows; the
		// rows after them empty the database for their own.
		e := newBenchEnv(b, kind, false, new(revocation.Epochs))
		forms := make([]string, issuanceSessions)
		for i := range forms {
			forms[i] = exchangeForm(e.session("demo", "agent"), "scope", "read").Encode()
		}
		var next atomic.Int64
		step := DefaultRefreshInterval / issuanceSessions
		b.Run("exchange-"+kind, func(b *testing.B) {
			e.perOp(b, func() {
				parallel(b, func() error {
					e.advance(step)
					return e.tokenRequest(forms[int(next.Add(1))%len(forms)])
				})
			})
		})
		grant := url.Values{"grant_type": {GrantClientCreds}}.Encode()
		b.Run("session-grant-cached-secret-"+kind, func(b *testing.B) {
			e.perOp(b, func() {
				parallel(b, func() error { return e.tokenRequest(grant, "agent", "demo-agent-secret") })
			})
		})
		b.Run("exchange-cache-hit-"+kind, func(b *testing.B) {
			hit := newBenchEnv(b, kind, true, new(revocation.Epochs))
			body := exchangeForm(hit.session("demo", "agent"), "scope", "read").Encode()
			hit.perOp(b, func() { parallel(b, func() error { return hit.tokenRequest(body) }) })
		})
		for _, hops := range []int{1, 3, 10} {
			b.Run(fmt.Sprintf("delegated-%dhop-one-chain-%s", hops, kind), func(b *testing.B) {
				epochs := new(revocation.Epochs)
				d := newBenchEnv(b, kind, false, epochs)
				body := delegatedForm(b, d.env, hops, epochs).Encode()
				d.perOp(b, func() { parallel(b, func() error { return d.tokenRequest(body) }) })
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
