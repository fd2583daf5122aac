package revocation

import "sync"

// Epochs tracks the newest delegation graph epoch seen per zone on
// caracal.delegations.invalidate. Verifiers that enforce epochs refuse a mandate whose
// delegation_graph_epoch is older than Current. The zero value is ready to use.
type Epochs struct {
	mu    sync.RWMutex
	zones map[string]int64
}

// Observe records ev's epoch if it is newer than the zone's current one. Epochs only
// move forward, so replays and out-of-order delivery change nothing. It reports
// whether the epoch moved.
func (e *Epochs) Observe(ev EpochEvent) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur, ok := e.zones[ev.ZoneID]; ok && cur >= ev.Epoch {
		return false
	}
	if e.zones == nil {
		e.zones = make(map[string]int64)
	}
	e.zones[ev.ZoneID] = ev.Epoch
	return true
}

// Current returns the newest epoch seen for zoneID, and false when none was seen.
func (e *Epochs) Current(zoneID string) (int64, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	n, ok := e.zones[zoneID]
	return n, ok
}
