package secret

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBusy means the verification queue is full or a request waited its bound; the caller should
// answer "temporarily unavailable" with a short Retry-After.
var ErrBusy = errors.New("secret verification queue is full")

// ErrKeyBusy means the caller's own queue key already has its cap of checks running or waiting;
// the caller should answer "slow down".
var ErrKeyBusy = errors.New("too many secret verifications in progress for this key")

// queue hands out a bounded number of Argon2 slots. Waiters are grouped by zone and, inside a zone,
// by key. A freed slot goes to the waiting zone that holds the fewest slots and, inside it, to the
// waiting key that holds the fewest, ties served round robin; so a flood under one key (or one
// zone), which holds slots, waits behind itself, and a newcomer gets the next free slot.
type queue struct {
	mu        sync.Mutex
	free      int // slots not held
	perKey    int // cap of running plus waiting checks per (zone, key)
	maxQueued int // cap of waiters in all
	maxWait   time.Duration
	queued    int
	zones     map[string]*zoneQueue
	ring      []*zoneQueue // zones with waiters, next served first
}

type zoneQueue struct {
	name string
	held int // slots held by this zone's keys
	keys map[string]*keyQueue
	ring []*keyQueue // keys with waiters, next served first
}

type keyQueue struct {
	name    string
	held    int // slots held by this key
	waiters []*waiter
}

type waiter struct {
	ready   chan struct{} // closed when a slot was handed to this waiter
	granted bool
}

func newQueue(slots, perKey, maxQueued int, maxWait time.Duration) *queue {
	return &queue{free: slots, perKey: perKey, maxQueued: maxQueued, maxWait: maxWait, zones: map[string]*zoneQueue{}}
}

// acquire takes a slot for (zone, key), waiting at most maxWait or until ctx ends. Every successful
// acquire must be followed by one release with the same zone and key.
func (q *queue) acquire(ctx context.Context, zone, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("waiting for a secret verification slot: %w", err)
	}
	q.mu.Lock()
	z := q.zones[zone]
	if z == nil {
		z = &zoneQueue{name: zone, keys: map[string]*keyQueue{}}
		q.zones[zone] = z
	}
	k := z.keys[key]
	if k == nil {
		k = &keyQueue{name: key}
		z.keys[key] = k
	}
	switch {
	case k.held+len(k.waiters) >= q.perKey:
		q.dropIfIdle(z, k)
		q.mu.Unlock()
		return ErrKeyBusy
	case q.free > 0 && q.queued == 0:
		q.free--
		k.held++
		z.held++
		q.mu.Unlock()
		return nil
	case q.queued >= q.maxQueued:
		q.dropIfIdle(z, k)
		q.mu.Unlock()
		return ErrBusy
	}
	w := &waiter{ready: make(chan struct{})}
	if len(k.waiters) == 0 {
		z.ring = append(z.ring, k)
		if len(z.ring) == 1 {
			q.ring = append(q.ring, z)
		}
	}
	k.waiters = append(k.waiters, w)
	q.queued++
	q.mu.Unlock()

	timer := time.NewTimer(q.maxWait)
	defer timer.Stop()
	var cause error
	select {
	case <-w.ready:
		return nil
	case <-timer.C:
		cause = ErrBusy
	case <-ctx.Done():
		cause = fmt.Errorf("waiting for a secret verification slot: %w", ctx.Err())
	}
	q.mu.Lock()
	if w.granted {
		// The slot arrived as we gave up; pass it on.
		q.mu.Unlock()
		q.release(zone, key)
		return cause
	}
	q.removeWaiter(z, k, w)
	q.mu.Unlock()
	return cause
}

// release returns a slot held by (zone, key) and hands it to the next waiter in the order above.
func (q *queue) release(zone, key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	z := q.zones[zone]
	k := z.keys[key]
	k.held--
	z.held--
	q.dropIfIdle(z, k)
	if len(q.ring) == 0 {
		q.free++
		return
	}
	zi := fewest(q.ring, func(z *zoneQueue) int { return z.held })
	nz := q.ring[zi]
	ki := fewest(nz.ring, func(k *keyQueue) int { return k.held })
	nk := nz.ring[ki]
	w := nk.waiters[0]
	nk.waiters = nk.waiters[1:]
	nk.held++
	nz.held++
	q.queued--
	// Served: the key goes to the back of its zone's ring, the zone to the back of the ring.
	nz.ring = append(nz.ring[:ki], nz.ring[ki+1:]...)
	if len(nk.waiters) > 0 {
		nz.ring = append(nz.ring, nk)
	}
	q.ring = append(q.ring[:zi], q.ring[zi+1:]...)
	if len(nz.ring) > 0 {
		q.ring = append(q.ring, nz)
	}
	w.granted = true
	close(w.ready)
}

// fewest returns the index of the first element with the smallest held count.
func fewest[T any](ring []T, held func(T) int) int {
	best := 0
	for i := 1; i < len(ring); i++ {
		if held(ring[i]) < held(ring[best]) {
			best = i
		}
	}
	return best
}

// removeWaiter takes a waiter that gave up out of its key, and the key or zone out of the rings
// when nothing of theirs is left waiting. q.mu is held.
func (q *queue) removeWaiter(z *zoneQueue, k *keyQueue, w *waiter) {
	for i, x := range k.waiters {
		if x == w {
			k.waiters = append(k.waiters[:i], k.waiters[i+1:]...)
			q.queued--
			break
		}
	}
	if len(k.waiters) == 0 {
		z.ring = without(z.ring, k)
		if len(z.ring) == 0 {
			q.ring = without(q.ring, z)
		}
	}
	q.dropIfIdle(z, k)
}

// dropIfIdle forgets a key with nothing held or waiting, and its zone once it has no keys.
// q.mu is held.
func (q *queue) dropIfIdle(z *zoneQueue, k *keyQueue) {
	if k.held > 0 || len(k.waiters) > 0 {
		return
	}
	delete(z.keys, k.name)
	if len(z.keys) == 0 {
		delete(q.zones, z.name)
	}
}

func without[T comparable](s []T, x T) []T {
	for i, y := range s {
		if y == x {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
