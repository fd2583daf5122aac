package revocation

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkRevoked measures the per-request check (sid, root_sid, edge and a two-hop
// path) against a set of 100,000 revoked anchors.
func BenchmarkRevoked(b *testing.B) {
	st := NewRevokedSet(nil)
	for i := range 100_000 {
		st.Add(sessionEvent("zone-a", fmt.Sprintf("ses_%06d", i)))
	}
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, hit := st.Revoked("zone-a", "ses_live_1", "ses_live_0", "edg_live", "edg_p0", "ses_054321"); !hit {
				b.Fatal("miss")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, hit := st.Revoked("zone-a", "ses_live_1", "ses_live_0", "edg_live", "edg_p0", "edg_p1"); hit {
				b.Fatal("hit")
			}
		}
	})
	b.Run("parallel-miss", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, hit := st.Revoked("zone-a", "ses_live_1", "ses_live_0", "edg_live"); hit {
					b.Fatal("hit")
				}
			}
		})
	})
}

// BenchmarkVerifySignature measures what a consumer spends on every entry.
func BenchmarkVerifySignature(b *testing.B) {
	key := []byte("bench-key")
	fields := signed(key, StreamSessionsRevoke, sessionEvent("zone-a", "ses_1").Fields())
	b.ReportAllocs()
	for b.Loop() {
		if !VerifySignature(key, StreamSessionsRevoke, fields) {
			b.Fatal("bad signature")
		}
	}
}

// BenchmarkPropagation measures, through the real Redis, the time from a
// RedisPublisher's XADD of a signed revocation to a separate consumer's RevokedSet reporting
// it, for 1,000 revocations per iteration. It reports the 50th and 99th percentiles.
func BenchmarkPropagation(b *testing.B) {
	admin := newClient(b, redisOptions(b))
	prefix := streamPrefix(b, admin)
	key := []byte("bench-key")
	pub := NewRedisPublisher(RedisOptions{Client: admin, StreamPrefix: prefix})
	st := NewRevokedSet(nil)
	c := startConsumer(b, st, nil, RedisOptions{Client: newClient(b, redisOptions(b)), Key: key, StreamPrefix: prefix})
	waitClosed(b, "consumer ready", c.Ready())

	ctx := context.Background()
	var latencies []time.Duration
	round := 0
	b.ReportAllocs()
	for b.Loop() {
		for i := range 1000 {
			sid := fmt.Sprintf("ses_%d_%d", round, i)
			done, release := st.Watch("zone-a", []string{sid})
			fields := signed(key, StreamSessionsRevoke, sessionEvent("zone-a", sid).Fields())
			start := time.Now()
			if err := pub.Publish(ctx, StreamSessionsRevoke, fields); err != nil {
				b.Fatal(err)
			}
			waitClosed(b, sid+" to propagate", done)
			latencies = append(latencies, time.Since(start))
			release()
		}
		round++
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
