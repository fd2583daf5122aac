package issuer

import (
	"sync"
	"time"
)

// throttle counts failed client authentications per (zone, client) in a fixed window.
// Once a client reaches the limit, authentication for it is refused with slow_down
// (before any Argon2 work) until the window ends, whoever presents the credentials.
type throttle struct {
	mu      sync.Mutex
	limit   int
	window  time.Duration
	max     int
	entries map[string]*throttleEntry
}

type throttleEntry struct {
	start    time.Time
	failures int
}

func newThrottle(limit int, window time.Duration, maxEntries int) *throttle {
	return &throttle{limit: limit, window: window, max: maxEntries, entries: make(map[string]*throttleEntry)}
}

// blocked reports how long the key must wait; zero means it may try.
func (t *throttle) blocked(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok {
		return 0
	}
	end := e.start.Add(t.window)
	if !now.Before(end) {
		delete(t.entries, key)
		return 0
	}
	if e.failures < t.limit {
		return 0
	}
	return end.Sub(now)
}

// fail records a failed attempt.
func (t *throttle) fail(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok || !now.Before(e.start.Add(t.window)) {
		if !ok && len(t.entries) >= t.max {
			t.sweep(now)
		}
		e = &throttleEntry{start: now}
		t.entries[key] = e
	}
	e.failures++
}

// succeed forgets the key's failures.
func (t *throttle) succeed(key string) {
	t.mu.Lock()
	delete(t.entries, key)
	t.mu.Unlock()
}

// sweep drops expired windows; if the table is still full it is cleared, which only
// forgets failure counts (it never blocks anyone), bounding memory under a flood of ids.
func (t *throttle) sweep(now time.Time) {
	for k, e := range t.entries {
		if !now.Before(e.start.Add(t.window)) {
			delete(t.entries, k)
		}
	}
	if len(t.entries) >= t.max {
		clear(t.entries)
	}
}
