package issuer

import (
	"sync"
	"time"

	"github.com/caracalgw/caracal/internal/cache"
)

// Lockout scopes: the counters an authentication attempt is charged to.
const (
	scopeClientSource = "client_source" // one client id from one source address in a zone
	scopeSource       = "source"        // every client id from one source address in a zone
	scopeClient       = "client"        // one client id from every source in a zone
)

// throttle counts client authentication attempts in fixed windows under several counters at once.
// An attempt is reserved on all its counters before any Argon2 work starts and settled afterwards,
// so attempts in flight count against the limit: however many arrive at once, no more than the
// limit of them can run. A counter whose failures plus attempts in flight reach its limit refuses
// further attempts until its window ends. The table is bounded: a full one forgets its oldest
// counter, which only forgets counts (it never blocks anyone), so a flood of ids costs bounded
// memory and the counters it did not push out keep counting.
type throttle struct {
	mu      sync.Mutex
	window  time.Duration
	entries *cache.Cache[string, *throttleEntry] // windows are ended by live, not by the cache
}

type throttleEntry struct {
	start    time.Time
	failures int
	pending  int
}

// counter is one key an attempt is charged to, with its limit.
type counter struct {
	scope string
	key   string
	limit int
}

// reservation is one attempt counted on its counters' entries.
type reservation struct {
	counters []counter
	entries  []*throttleEntry
}

// outcome of a reserved attempt.
type outcome int

const (
	attemptFailed    outcome = iota // a wrong secret, an unknown or disabled client
	attemptSucceeded                // the secret matched
	attemptAborted                  // no Argon2 run happened (queue full, cancelled)
)

func newThrottle(window time.Duration, maxEntries int) *throttle {
	return &throttle{window: window, entries: cache.New[string, *throttleEntry](maxEntries, 0, nil)}
}

// reserve counts an attempt on every counter, or on none when one of them is at its limit; then
// it returns the wait until that counter's window ends (one second when only attempts in flight
// fill it, since they may yet succeed) and the counter.
func (t *throttle) reserve(cs []counter, now time.Time) (*reservation, time.Duration, counter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	var blocking counter
	for _, c := range cs {
		e := t.live(c.key, now)
		if e == nil || e.failures+e.pending < c.limit {
			continue
		}
		w := time.Second
		if e.failures >= c.limit {
			w = e.start.Add(t.window).Sub(now)
		}
		if w > wait {
			wait, blocking = w, c
		}
	}
	if wait > 0 {
		return nil, wait, blocking
	}
	r := &reservation{counters: cs, entries: make([]*throttleEntry, len(cs))}
	for i, c := range cs {
		e := t.live(c.key, now)
		if e == nil {
			e = &throttleEntry{start: now}
			t.entries.Set(c.key, e)
		}
		e.pending++
		r.entries[i] = e
	}
	return r, 0, counter{}
}

// settle records the outcome of a reserved attempt and returns the counters it locked, that is
// whose failures reached their limit with this attempt. A success forgives the failures of its
// (client, source) counter; on the wider counters it only releases its own reservation, so that
// an attacker's failures from elsewhere still count.
func (t *throttle) settle(r *reservation, o outcome) []counter {
	t.mu.Lock()
	defer t.mu.Unlock()
	var locked []counter
	for i, e := range r.entries {
		c := r.counters[i]
		e.pending = max(0, e.pending-1)
		switch o {
		case attemptFailed:
			e.failures++
			if e.failures == c.limit {
				locked = append(locked, c)
			}
		case attemptSucceeded:
			if c.scope == scopeClientSource {
				e.failures = 0
			}
		}
		// An entry replaced after its window ended, or evicted, is no longer in the table.
		if cur, ok := t.entries.Get(c.key); ok && cur == e && e.failures == 0 && e.pending == 0 {
			t.entries.Delete(c.key)
		}
	}
	return locked
}

// live returns the entry of key if its window has not ended, dropping an expired one.
func (t *throttle) live(key string, now time.Time) *throttleEntry {
	e, ok := t.entries.Get(key)
	if !ok {
		return nil
	}
	if !now.Before(e.start.Add(t.window)) {
		t.entries.Delete(key)
		return nil
	}
	return e
}
