package control

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// BenchmarkCreateEdge measures edge creations through the whole endpoint on
// PostgreSQL: bearer extraction, session mandate verification (cached), the session,
// resource and graph reads, the creating transaction under the zone lock (epoch bump
// and outbox row) and the audit event. All creations go to one zone, so they
// serialise on its lock; the parallel run shows what that costs.
func BenchmarkCreateEdge(b *testing.B) {
	e := newEnv(b, openPostgres(b))
	e.seedZone("bench")
	source, _ := e.session("bench", "alice")
	_, target := e.session("bench", "bob")
	body := `{"target_session_id":"` + target + `","resource":"` + apiResource + `","scopes":["read"],"ttl_seconds":600}`
	create := func(b *testing.B) {
		req := httptest.NewRequest(http.MethodPost, testBase+"/v1/zones/bench/delegations", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+source)
		rec := httptest.NewRecorder()
		e.svc.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			b.Errorf("creating an edge: %d %s", rec.Code, rec.Body)
		}
	}

	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			create(b)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "edges/s")
	})
	b.Run("parallel-8", func(b *testing.B) {
		b.ReportAllocs()
		// RunParallel starts parallelism × GOMAXPROCS goroutines: at least 8 clients.
		b.SetParallelism((8 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				create(b)
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "edges/s")
	})
}
