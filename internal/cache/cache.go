// Package cache is the bounded in-memory cache of the process: entries expire after a
// time to live (or at a deadline of their own), and a full cache makes room by evicting
// its oldest entries one at a time, never by forgetting everything at once. A lookup
// takes a read lock and does not allocate, so it suits hot paths.
package cache

import (
	"sync"
	"time"
)

// Cache maps keys to values, with at most Max entries. The entry evicted to make room is
// the one stored longest ago (storing a key again makes it the newest); lookups do not
// reorder entries, so that they can share a read lock. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
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
	return &Cache[K, V]{max: max(1, maxEntries), ttl: ttl, now: now, entries: make(map[K]*entry[K, V])}
}

// Get returns the value of key, if it is stored and has not expired.
func (c *Cache[K, V]) Get(key K) (V, bool) {
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

// Set stores v under key for the cache's time to live.
func (c *Cache[K, V]) Set(key K, v V) {
	var expires time.Time
	if c.ttl > 0 {
		expires = c.now().Add(c.ttl)
	}
	c.SetUntil(key, v, expires)
}

// SetUntil stores v under key until expires (for ever when zero, until evicted). When
// the cache is full, expired entries met at the old end go first, then the oldest live
// one: one store evicts at most one live entry.
func (c *Cache[K, V]) SetUntil(key K, v V, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		c.unlink(e)
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
	e := &entry[K, V]{key: key, val: v, expires: expires, prev: c.newest}
	if c.newest != nil {
		c.newest.next = e
	} else {
		c.oldest = e
	}
	c.newest = e
	c.entries[key] = e
}

// Delete removes key.
func (c *Cache[K, V]) Delete(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		c.removeLocked(e)
	}
}

// Len is the number of entries stored, expired ones not yet evicted included.
func (c *Cache[K, V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

func (c *Cache[K, V]) removeLocked(e *entry[K, V]) {
	c.unlink(e)
	delete(c.entries, e.key)
}

func (c *Cache[K, V]) unlink(e *entry[K, V]) {
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
