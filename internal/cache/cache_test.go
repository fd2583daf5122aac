package cache

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
)

func TestAFullCacheEvictsOnlyItsOldestEntry(t *testing.T) {
	c := New[string, int](3, 0, nil)
	for i, k := range []string{"a", "b", "c"} {
		c.Set(k, i)
	}
	c.Set("d", 3)
	if _, ok := c.Get("a"); ok {
		t.Fatal("the oldest entry survived a store into a full cache")
	}
	for i, k := range []string{"b", "c", "d"} {
		if v, ok := c.Get(k); !ok || v != i+1 {
			t.Fatalf("Get(%q) = %d, %v after one eviction; want %d", k, v, ok, i+1)
		}
	}
	if c.Len() != 3 {
		t.Fatalf("%d entries, want 3", c.Len())
	}
}

func TestStoringAKeyAgainMakesItTheNewest(t *testing.T) {
	c := New[string, int](2, 0, nil)
	c.Set("a", 1)
	c.Set("b", 2)
	c.Set("a", 10) // a is now the newest: b goes first
	c.Set("c", 3)
	if _, ok := c.Get("b"); ok {
		t.Fatal("b survived, though a was stored after it")
	}
	if v, ok := c.Get("a"); !ok || v != 10 {
		t.Fatalf("Get(a) = %d, %v; want the value stored last", v, ok)
	}
	if c.Len() != 2 {
		t.Fatalf("%d entries, want 2", c.Len())
	}
}

func TestEntriesExpireAfterTheTTLOrTheirDeadline(t *testing.T) {
	clock := testenv.NewClock(time.Unix(1000, 0))
	c := New[string, string](10, time.Minute, clock.Now)
	c.Set("ttl", "v")
	c.SetUntil("deadline", "v", clock.Now().Add(10*time.Second))
	c.SetUntil("forever", "v", time.Time{})
	clock.Advance(10 * time.Second)
	if _, ok := c.Get("deadline"); ok {
		t.Fatal("an entry outlived its deadline")
	}
	if _, ok := c.Get("ttl"); !ok {
		t.Fatal("an entry expired before its TTL")
	}
	clock.Advance(50 * time.Second)
	if _, ok := c.Get("ttl"); ok {
		t.Fatal("an entry outlived its TTL")
	}
	clock.Advance(24 * time.Hour)
	if _, ok := c.Get("forever"); !ok {
		t.Fatal("an entry stored without a deadline expired")
	}
}

func TestAFullCacheDropsExpiredEntriesBeforeLiveOnes(t *testing.T) {
	clock := testenv.NewClock(time.Unix(1000, 0))
	c := New[int, int](4, time.Minute, clock.Now)
	c.Set(1, 1)
	c.Set(2, 2)
	clock.Advance(30 * time.Second)
	c.Set(3, 3)
	c.Set(4, 4)
	clock.Advance(31 * time.Second) // 1 and 2 have expired, 3 and 4 have not
	c.Set(5, 5)
	if c.Len() != 3 {
		t.Fatalf("%d entries, want the two expired ones gone and nothing else", c.Len())
	}
	for _, k := range []int{3, 4, 5} {
		if _, ok := c.Get(k); !ok {
			t.Fatalf("live entry %d was evicted", k)
		}
	}
}

func TestDelete(t *testing.T) {
	c := New[string, int](2, 0, nil)
	c.Set("a", 1)
	c.Set("b", 2)
	c.Delete("a")
	c.Delete("missing")
	c.Set("c", 3)
	if _, ok := c.Get("a"); ok || c.Len() != 2 {
		t.Fatalf("after Delete: a present %v, %d entries", ok, c.Len())
	}
	if _, ok := c.Get("b"); !ok {
		t.Fatal("b was evicted although Delete made room")
	}
}

func TestTheCacheStaysBoundedUnderConcurrentUse(t *testing.T) {
	c := New[string, int](100, time.Minute, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := fmt.Sprintf("%d-%d", g, i)
				c.Set(k, i)
				if v, ok := c.Get(k); ok && v != i {
					t.Errorf("Get(%q) = %d, want %d", k, v, i)
				}
			}
		}()
	}
	wg.Wait()
	if c.Len() != 100 {
		t.Fatalf("%d entries, want 100", c.Len())
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	c := New[[32]byte, *int](10, time.Minute, nil)
	var k [32]byte
	v := 1
	c.Set(k, &v)
	if allocs := testing.AllocsPerRun(1000, func() { _, _ = c.Get(k) }); allocs != 0 {
		t.Fatalf("%.1f allocations per Get", allocs)
	}
}

// BenchmarkGet is a hit in a cache of 100,000 entries keyed like the verified-token cache.
func BenchmarkGet(b *testing.B) {
	c := New[[32]byte, int](100_000, time.Hour, nil)
	var k [32]byte
	for i := range 100_000 {
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		c.Set(k, i)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := c.Get(k); !ok {
			b.Fatal("miss")
		}
	}
}

func TestAShardedCacheStaysBoundedAndKeepsItsNewestEntries(t *testing.T) {
	const size = shardedFrom
	c := New[int, int](size, 0, nil)
	if len(c.shards) != shardCount {
		t.Fatalf("%d shards for %d entries, want %d", len(c.shards), size, shardCount)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 3 * size {
				c.Set(g*10*size+i, i)
			}
		})
	}
	wg.Wait()
	if n := c.Len(); n > size {
		t.Fatalf("%d entries, more than the bound %d", n, size)
	}
	// Each shard evicts its oldest: keys stored after all the others are all still there
	// (64 keys cannot fill any shard of 256 on their own).
	for i := range 64 {
		c.Set(-1-i, i)
	}
	for i := range 64 {
		if v, ok := c.Get(-1 - i); !ok || v != i {
			t.Fatalf("key %d: %d, %v; a recent entry was evicted", -1-i, v, ok)
		}
	}
	if n := c.Len(); n > size {
		t.Fatalf("%d entries, more than the bound %d", n, size)
	}
}

// BenchmarkSetParallel stores distinct keys from many goroutines into a cache of the
// STS's session-cache size, as 32 concurrent token exchanges do.
func BenchmarkSetParallel(b *testing.B) {
	c := New[[32]byte, int](100_000, time.Hour, nil)
	var next atomic.Uint64
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		var k [32]byte
		for pb.Next() {
			i := next.Add(1)
			k[0], k[1], k[2], k[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
			c.Set(k, int(i))
		}
	})
}
