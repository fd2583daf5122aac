package revocation

import (
	"container/heap"
	"math"
	"sync"
	"time"
)

// ExpiryGrace is how long the RevokedSet keeps an entry after its ExpiresAt. A verifier
// accepts a mandate until its exp plus a clock leeway (30 s by default), and the
// revoking and verifying servers' clocks may differ; the grace covers both, so an entry
// never disappears while a mandate carrying its anchor can still pass. Verifiers must
// not be configured with a leeway above it.
const ExpiryGrace = 5 * time.Minute

// anchorKey identifies a revoked id within its zone. A struct of two strings hashes
// without allocating, unlike a concatenated string.
type anchorKey struct {
	zone, id string
}

// RevokedSet is the in-memory revocation set of one process. Lookups are map lookups under a
// read lock and never allocate: they run on every request and at every response chunk
// boundary.
//
// Entries are dropped ExpiryGrace after their ExpiresAt. Expired entries are removed by
// every Add (cheaply, from a heap ordered by expiry) and by Sweep, which the Redis
// consumer calls whenever its blocking read comes back empty. An entry that has expired
// but not yet been swept still reports as revoked, which is harmless: no valid mandate
// can carry it any more.
type RevokedSet struct {
	now func() time.Time

	mu       sync.RWMutex
	entries  map[anchorKey]int64 // drop time, unix nanoseconds
	expiry   expiryHeap
	watchers map[anchorKey]map[*watcher]struct{}
}

type watcher struct {
	ch   chan struct{}
	keys []anchorKey // cleared on release, so releasing twice is harmless
}

// NewRevokedSet returns an empty RevokedSet; now is its clock (time.Now when nil).
func NewRevokedSet(now func() time.Time) *RevokedSet {
	if now == nil {
		now = time.Now
	}
	return &RevokedSet{
		now:      now,
		entries:  make(map[anchorKey]int64),
		watchers: make(map[anchorKey]map[*watcher]struct{}),
	}
}

// Add records the event's anchors (session and/or delegation edge) as revoked in its
// zone and fires the watches on them. An event already past ExpiresAt plus ExpiryGrace
// is ignored, as is an event without a zone; an event without ExpiresAt is kept for
// the life of the RevokedSet, which is the safe reading of a missing bound.
//
// It reports whether the event was new: false when the RevokedSet already held each of
// its anchors at least as long (a replay), true otherwise, ignored events included.
func (s *RevokedSet) Add(e Event) bool {
	if e.ZoneID == "" {
		return true
	}
	drop := int64(math.MaxInt64)
	if !e.ExpiresAt.IsZero() {
		drop = e.ExpiresAt.Add(ExpiryGrace).UnixNano()
	}
	now := s.now().UnixNano()
	if drop <= now {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	added := false
	for _, id := range [...]string{e.SessionID, e.DelegationEdgeID} {
		if id == "" {
			continue
		}
		k := anchorKey{e.ZoneID, id}
		if cur, ok := s.entries[k]; !ok || drop > cur {
			s.entries[k] = drop
			// Replays of the same entry (rebuilds) find it already present with the
			// same drop time and push nothing, so the heap does not grow with them.
			heap.Push(&s.expiry, expiryItem{at: drop, key: k})
			added = true
		}
		s.fireLocked(k)
	}
	return added
}

// Revoked reports the first of ids revoked in zoneID. Empty ids are skipped, so callers
// can pass optional claims (delegation_edge_id) as they are.
func (s *RevokedSet) Revoked(zoneID string, ids ...string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, id := range ids {
		if id == "" {
			continue
		}
		if _, ok := s.entries[anchorKey{zoneID, id}]; ok {
			return id, true
		}
	}
	return "", false
}

// closedChan is returned by Watch for ids that are already revoked.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Watch returns a channel that is closed as soon as any of ids is revoked in zoneID
// (at once if one already is), and a function that releases the watch. The caller must
// call it when it stops watching, revoked or not; it is safe to call more than once.
func (s *RevokedSet) Watch(zoneID string, ids []string) (<-chan struct{}, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &watcher{ch: make(chan struct{})}
	for _, id := range ids {
		if id == "" {
			continue
		}
		k := anchorKey{zoneID, id}
		if _, ok := s.entries[k]; ok {
			return closedChan, func() {}
		}
		w.keys = append(w.keys, k)
	}
	for _, k := range w.keys {
		set := s.watchers[k]
		if set == nil {
			set = make(map[*watcher]struct{})
			s.watchers[k] = set
		}
		set[w] = struct{}{}
	}
	return w.ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.unwatchLocked(w)
	}
}

// Sweep drops the entries whose ExpiresAt plus ExpiryGrace has passed.
func (s *RevokedSet) Sweep() {
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
}

// Len returns the number of revoked anchors held, expired ones not yet swept included.
func (s *RevokedSet) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.entries)
}

func (s *RevokedSet) sweepLocked(now int64) {
	for len(s.expiry) > 0 && s.expiry[0].at <= now {
		it := heap.Pop(&s.expiry).(expiryItem)
		// A later event for the same anchor may have extended its life; the heap
		// still holds the older item, which must not remove the entry.
		if s.entries[it.key] == it.at {
			delete(s.entries, it.key)
		}
	}
}

// fireLocked closes and unregisters every watch on k.
func (s *RevokedSet) fireLocked(k anchorKey) {
	for w := range s.watchers[k] {
		close(w.ch)
		s.unwatchLocked(w)
	}
}

func (s *RevokedSet) unwatchLocked(w *watcher) {
	for _, k := range w.keys {
		set := s.watchers[k]
		delete(set, w)
		if len(set) == 0 {
			delete(s.watchers, k)
		}
	}
	w.keys = nil
}

type expiryItem struct {
	at  int64
	key anchorKey
}

// expiryHeap is a min-heap of drop times (container/heap).
type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
