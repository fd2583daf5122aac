package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchClients is the number of concurrent clients of BenchmarkGateway.
const benchClients = 32

// target is one route of a load run and the mandate it needs (none for plain routes).
type target struct {
	path, token string
}

// loadGen sends requests from benchClients concurrent clients over HTTP/1.1 keep-alive
// connections: send hands one request for a target to the next free client.
type loadGen struct {
	in      *instance
	client  *http.Client
	targets []target
	jobs    chan int
	flight  sync.WaitGroup // requests handed out and not yet answered
	workers sync.WaitGroup

	mu   sync.Mutex
	lat  [][]time.Duration // per target
	fail error
}

func newLoadGen(b *testing.B, in *instance, clients int, targets ...target) *loadGen {
	b.Helper()
	g := &loadGen{
		in:      in,
		client:  in.newClient(b, false, 2*clients),
		targets: targets,
		jobs:    make(chan int),
		lat:     make([][]time.Duration, len(targets)),
	}
	for range clients {
		g.workers.Go(g.work)
	}
	// Warm up: connections open, the mandate in the verifier's cache.
	for range 4 * clients {
		for i := range targets {
			g.send(i)
		}
	}
	g.flight.Wait()
	for i := range g.lat {
		g.lat[i] = g.lat[i][:0]
	}
	if g.fail != nil {
		b.Fatal(g.fail)
	}
	return g
}

func (g *loadGen) work() {
	for i := range g.jobs {
		start := time.Now()
		err := g.once(g.targets[i])
		d := time.Since(start)
		g.mu.Lock()
		g.lat[i] = append(g.lat[i], d)
		if err != nil && g.fail == nil {
			g.fail = err
		}
		g.mu.Unlock()
		g.flight.Done()
	}
}

func (g *loadGen) once(t target) error {
	req, err := http.NewRequest(http.MethodGet, g.in.url(t.path), nil)
	if err != nil {
		return err
	}
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := g.client.Do(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", t.path, resp.StatusCode)
	}
	return nil
}

func (g *loadGen) send(i int) {
	g.flight.Add(1)
	g.jobs <- i
}

// stop ends the clients and fails the benchmark if any request failed.
func (g *loadGen) stop(b *testing.B) {
	b.Helper()
	g.flight.Wait()
	close(g.jobs)
	g.workers.Wait()
	if g.fail != nil {
		b.Fatal(g.fail)
	}
}

func (g *loadGen) p50(i int) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return percentile(g.lat[i], 50)
}

// percentile returns the p-th percentile (nearest rank) of d, sorting it.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := (len(d)*p + 99) / 100
	return d[max(i-1, 0)]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// BenchmarkGateway compares requests through caracal_mandate + reverse_proxy with plain
// reverse_proxy to the same fast upstream, over HTTP/1.1 keep-alive connections with a
// warm verification cache. "plain" and "mandate" run alone from 32 clients (one request
// per op); "alternating" runs rounds of each in turn from 32 clients (one op is a round of
// 256 requests of each), so its ratio comes from one run under the same conditions;
// "alternating-1-client" does the same from a single client, where the p50 difference is
// the latency the handler adds rather than queueing.
func BenchmarkGateway(b *testing.B) {
	up := newUpstream(b)
	in := startGateway(b, gatewayConfig{serveSTS: true, upstream: up.addr()})
	_, m := in.agentMandate(b, in.url(""))
	plain, guarded := target{"/fast-plain/fast", ""}, target{"/fast/fast", m}

	for name, t := range map[string]target{"plain": plain, "mandate": guarded} {
		b.Run(name, func(b *testing.B) {
			g := newLoadGen(b, in, benchClients, t)
			b.ReportAllocs()
			n := 0
			start := time.Now()
			for b.Loop() {
				g.send(0)
				n++
			}
			g.flight.Wait()
			elapsed := time.Since(start)
			g.stop(b)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "req/s")
			b.ReportMetric(micros(g.p50(0)), "p50-µs")
		})
	}

	// Saturated: 32 clients, where the p50 is mostly queueing on two cores.
	b.Run("alternating", func(b *testing.B) { alternate(b, newLoadGen(b, in, benchClients, plain, guarded), 256) })
	// One client: the latency the handler adds to a request, without queueing.
	b.Run("alternating-1-client", func(b *testing.B) { alternate(b, newLoadGen(b, in, 1, plain, guarded), 64) })
}

// alternate runs rounds of round requests to g's two targets (plain first, then
// guarded) in turn, swapping the order every op so neither side always runs on a warmer
// system, and reports both rates, their ratio and both p50s, from the same run.
func alternate(b *testing.B, g *loadGen, round int) {
	var (
		spent [2]time.Duration
		count [2]int
		iter  int
	)
	b.ReportAllocs()
	for b.Loop() {
		for k := range 2 {
			side := (iter + k) % 2
			start := time.Now()
			for range round {
				g.send(side)
			}
			g.flight.Wait()
			spent[side] += time.Since(start)
			count[side] += round
		}
		iter++
	}
	g.stop(b)
	plainRate := float64(count[0]) / spent[0].Seconds()
	mandateRate := float64(count[1]) / spent[1].Seconds()
	p50Plain, p50Mandate := g.p50(0), g.p50(1)
	b.ReportMetric(plainRate, "plain-req/s")
	b.ReportMetric(mandateRate, "mandate-req/s")
	b.ReportMetric(mandateRate/plainRate, "ratio")
	b.ReportMetric(micros(p50Plain), "plain-p50-µs")
	b.ReportMetric(micros(p50Mandate), "mandate-p50-µs")
	b.ReportMetric(micros(p50Mandate-p50Plain), "added-p50-µs")
}

// streamBytes is the body of BenchmarkStreamWriter: the demo upstream's maximum.
const streamBytes = 1 << 30

// fetch downloads path (1 GiB), discarding it, and returns how long it took.
func fetch(b *testing.B, in *instance, client *http.Client, path, token string) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	resp := in.open(b, ctx, client, path, token)
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, make([]byte, 256<<10))
	if err != nil || n != streamBytes {
		b.Fatalf("%s: %d bytes, %v", path, n, err)
	}
	return time.Since(start)
}

func mbps(d time.Duration) float64 { return streamBytes / 1e6 / d.Seconds() }

// BenchmarkStreamWriter sends a 1 GiB body from the demo upstream through one Caddy,
// on a route guarded by caracal_mandate (re-checking revocation every 4 KiB) and on a
// plain route, to a client that discards it. "alternating" downloads both in each op
// and reports the ratio of the same run.
func BenchmarkStreamWriter(b *testing.B) {
	in := startGateway(b, gatewayConfig{serveSTS: true})
	_, m := in.agentMandate(b, in.url(""))
	client := in.newClient(b, false, 2)
	const query = "/stream?bytes=1073741824"
	routes := []target{{"/plain" + query, ""}, {"/api" + query, m}}

	for i, name := range []string{"plain", "mandate"} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(streamBytes)
			b.ReportAllocs()
			for b.Loop() {
				fetch(b, in, client, routes[i].path, routes[i].token)
			}
		})
	}
	b.Run("alternating", func(b *testing.B) {
		var (
			spent [2]time.Duration
			iter  int
		)
		b.ReportAllocs()
		for b.Loop() {
			for k := range 2 {
				side := (iter + k) % 2
				spent[side] += fetch(b, in, client, routes[side].path, routes[side].token)
			}
			iter++
		}
		plainRate, mandateRate := mbps(spent[0]/time.Duration(iter)), mbps(spent[1]/time.Duration(iter))
		b.ReportMetric(plainRate, "plain-MB/s")
		b.ReportMetric(mandateRate, "mandate-MB/s")
		b.ReportMetric(mandateRate/plainRate, "ratio")
	})
}

// untilRefused asks in with the mandate, without pausing, until it answers 401, and
// returns the time since start. A poll whose response is cut by the revocation arriving
// mid-way counts as not refused yet.
func untilRefused(b *testing.B, in *instance, client *http.Client, mandate string, start time.Time) time.Duration {
	b.Helper()
	deadline := start.Add(time.Minute)
	for {
		resp, _, err := in.try(b, client, "/api/hello", mandate)
		if err == nil && resp.StatusCode == http.StatusUnauthorized {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			b.Fatal("the revocation did not reach the other process")
		}
	}
}

// BenchmarkRevocationPropagation measures, for 1,000 sessions revoked one after the
// other through process A's RFC 7009 endpoint, how long until process B (another
// caracal reading the same Redis streams) refuses the session's resource mandate: the
// whole path of storage, outbox relay, Redis stream and B's consumer, timed from the
// moment the revocation request is sent. Each op is the 1,000 revocations; p50 and p99
// are over all of them.
func BenchmarkRevocationPropagation(b *testing.B) {
	const sessions = 1000
	rs := newRedisStreams(b)
	storage := postgresStorage(b)
	a := startGateway(b, gatewayConfig{serveSTS: true, storage: storage, revocation: rs.revocation(rs.url)})
	base := a.url("")
	other := startGateway(b, gatewayConfig{base: base, storage: storage, revocation: rs.revocation(rs.url)})
	client := other.newClient(b, false, 2)
	var latencies, acks []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		type pair struct{ session, mandate string }
		pairs := make([]pair, sessions)
		for i := range pairs {
			s, m := a.agentMandate(b, base)
			// Verified once on B, so the polls below measure the revocation only.
			if resp, body := other.call(b, client, "/api/hello", m); resp.StatusCode != http.StatusOK {
				b.Fatalf("before the revocation: %d %s", resp.StatusCode, body)
			}
			pairs[i] = pair{s, m}
		}
		b.StartTimer()
		for _, p := range pairs {
			start := time.Now()
			a.revoke(b, "alpha", p.session)
			acks = append(acks, time.Since(start))
			latencies = append(latencies, untilRefused(b, other, client, p.mandate, start))
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(latencies, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(latencies, 99)), "p99-ms")
	// How much of it the revocation request itself takes (its storage transaction).
	b.ReportMetric(ms(percentile(acks, 50)), "ack-p50-ms")
}
