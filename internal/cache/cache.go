// Package cache is the bounded in-memory cache of the process: entries expire after a
// time to live (or at a deadline of their own), and a full cache makes room by evicting
// its oldest entries one at a time, never by forgetting everything at once. A lookup
// takes a read lock and does not allocate, so it suits hot paths. A large cache is split
// into shards with a lock each, so that concurrent stores of different keys seldom wait
// for one another.
package cache

import (
	"hash/maphash"
	"sync"
	"time"
)

// Sharding: a cache of at least shardedFrom entries is split into shardCount shards by
// the hash of the key, each holding an equal part of the bound and evicting its own
// oldest entry. Under one lock, 32 concurrent stores (one per token exchange in the
// STS's session cache) queued behind each other into a convoy of milliseconds on two
// cores; smaller caches keep one shard and so the exact order of eviction.
const (
	shardedFrom = 4096
	shardCount  = 16
)

// Cache maps keys to values, with at most Max entries. The entry evicted to make room is
// the one of its shard stored longest ago (storing a key again makes it the newest;
// a cache below shardedFrom entries has one shard); lookups do not reorder entries, so
// that they can share a read lock. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	shards []shard[K, V]
	seed   maphash.Seed
}

// shard is one part of a cache: a map under its own lock and the list of its entries in
// the order they were stored.
type shard[K comparable, V any] struct {
	max int
	ttl time.Duration
	now func() time.Time

	mu      sync.RWMutex
	entries map[K]*entry[K, V]
	// oldest and newest are the ends of the list of entries in the order they were
	// stored.
	oldest, newest *entry[K, V]
}

type entry[K comparable, V any] struct {
	key        K
	val        V
	expires    time.Time
	prev, next *entry[K, V] // towards oldest, towards newest
}

// New returns a cache of at most maxEntries entries (at least one) whose entries live
// for ttl after they are stored (for ever when ttl is not positive, until evicted),
// reading the time from now (time.Now when nil).
func New[K comparable, V any](maxEntries int, ttl time.Duration, now func() time.Time) *Cache[K, V] {
	if now == nil {
		now = time.Now
	}
	maxEntries = max(1, maxEntries)
	n := 1
	if maxEntries >= shardedFrom {
		n = shardCount
	}
	c := &Cache[K, V]{shards: make([]shard[K, V], n), seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i] = shard[K, V]{max: maxEntries / n, ttl: ttl, now: now, entries: make(map[K]*entry[K, V])}
	}
	return c
}

// shard returns the shard that holds key.
func (c *Cache[K, V]) shard(key K) *shard[K, V] {
	if len(c.shards) == 1 {
		return &c.shards[0]
	}
	return &c.shards[maphash.Comparable(c.seed, key)%uint64(len(c.shards))]
}

// Get returns the value of key, if it is stored and has not expired.
func (c *Cache[K, V]) Get(key K) (V, bool) { return c.shard(key).get(key) }

// Set stores v under key for the cache's time to live.
func (c *Cache[K, V]) Set(key K, v V) { c.shard(key).set(key, v) }

// SetUntil stores v under key until expires (for ever when zero, until evicted). When
// the key's shard is full, expired entries met at its old end go first, then its oldest
// live one: one store evicts at most one live entry.
func (c *Cache[K, V]) SetUntil(key K, v V, expires time.Time) {
	c.shard(key).setUntil(key, v, expires)
}

// Delete removes key.
func (c *Cache[K, V]) Delete(key K) { c.shard(key).delete(key) }

// Len is the number of entries stored, expired ones not yet evicted included.
func (c *Cache[K, V]) Len() int {
	n := 0
	for i := range c.shards {
		n += c.shards[i].len()
	}
	return n
}

func (c *shard[K, V]) get(key K) (V, bool) {
	c.mu.RLock()
	e, ok := c.entries[key]
	var v V
	var expires time.Time
	if ok {
		v, expires = e.val, e.expires
	}
	c.mu.RUnlock()
	if !ok || (!expires.IsZero() && !c.now().Before(expires)) {
		var zero V
		return zero, false
	}
	return v, true
}

func (c *shard[K, V]) set(key K, v V) {
	var expires time.Time
	if c.ttl > 0 {
		expires = c.now().Add(c.ttl)
	}
	c.setUntil(key, v, expires)
}

func (c *shard[K, V]) setUntil(key K, v V, expires time.Time) {
	// Allocated before the lock: an allocation can make this goroutine assist the
	// collector, and every store and lookup of the shard would wait for it.
	e := &entry[K, V]{key: key, val: v, expires: expires}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.entries[key]; ok {
		c.unlink(old)
		delete(c.entries, key)
	}
	if len(c.entries) >= c.max {
		now := c.now()
		for c.oldest != nil && !c.oldest.expires.IsZero() && !now.Before(c.oldest.expires) {
			c.removeLocked(c.oldest)
		}
		if len(c.entries) >= c.max {
			c.removeLocked(c.oldest)
		}
	}
	e.prev = c.newest
	if c.newest != nil {
		c.newest.next = e
	} else {
		c.oldest = e
	}
	c.newest = e
	c.entries[key] = e
}

func (c *shard[K, V]) delete(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		c.removeLocked(e)
	}
}

func (c *shard[K, V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

func (c *shard[K, V]) removeLocked(e *entry[K, V]) {
	c.unlink(e)
	delete(c.entries, e.key)
}

func (c *shard[K, V]) unlink(e *entry[K, V]) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.oldest = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.newest = e.prev
	}
	e.prev, e.next = nil, nil
}
