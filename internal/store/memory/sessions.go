package memory

import (
	"hash/maphash"
	"sync"

	"github.com/caracalgw/caracal/internal/store"
)

// sessionShards is how many parts a zone's sessions are split into.
const sessionShards = 16

var sessionSeed = maphash.MakeSeed()

// sessionTable is a zone's sessions by sid, split into shards with a lock each.
//
// Creating a session is the store's most frequent write (one per client_credentials
// grant), so CreateSession holds the store's lock shared, which is enough to know that
// the zone and the application exist, and then one shard's lock. Every other use of
// the table holds the store's lock, shared or exclusive, and takes the shard locks it
// needs; under the exclusive lock no CreateSession runs, so what a writer reads of the
// table is consistent with the rest of the zone, as with one lock.
//
// One lock was not enough: when the process has more running threads than free
// cores, the operating system can stop the thread holding the store's write lock for
// a whole time slice, and every session grant then waits for it. In
// BenchmarkIssuance/session-grant-cached-secret-memory that was a p99 of ~20 ms with
// two Ps on two cores against ~0.2 ms with one P.
type sessionTable struct {
	shards [sessionShards]sessionShard
}

type sessionShard struct {
	// Read-write: reads of one shard, as many exchanges make at once, do not wait for
	// each other.
	mu sync.RWMutex
	m  map[string]store.Session
}

func newSessionTable() *sessionTable {
	t := &sessionTable{}
	for i := range t.shards {
		t.shards[i].m = make(map[string]store.Session)
	}
	return t
}

func (t *sessionTable) shard(sid string) *sessionShard {
	return &t.shards[maphash.String(sessionSeed, sid)%sessionShards]
}

func (t *sessionTable) get(sid string) (store.Session, bool) {
	sh := t.shard(sid)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	sess, ok := sh.m[sid]
	return sess, ok
}

// insert stores sess unless its sid is taken, and reports whether it did.
func (t *sessionTable) insert(sess store.Session) bool {
	sh := t.shard(sess.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[sess.ID]; ok {
		return false
	}
	sh.m[sess.ID] = sess
	return true
}

// put stores sess, replacing the session of the same sid.
func (t *sessionTable) put(sess store.Session) {
	sh := t.shard(sess.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.m[sess.ID] = sess
}

// each calls f with every session, one shard at a time, under that shard's read
// lock; f must not change the table.
func (t *sessionTable) each(f func(store.Session)) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.RLock()
		for _, sess := range sh.m {
			f(sess)
		}
		sh.mu.RUnlock()
	}
}

// deleteWhere deletes up to limit sessions for which drop is true and returns how many.
func (t *sessionTable) deleteWhere(limit int, drop func(store.Session) bool) int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for id, sess := range sh.m {
			if n == limit {
				break
			}
			if drop(sess) {
				delete(sh.m, id)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}
