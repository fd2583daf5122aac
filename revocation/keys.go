package revocation

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// StreamKeys carries zone signing key changes: a rotation published the next key, or an
// emergency rotation revoked the signing key. Verifiers that fetch a zone's JWKS refetch
// it when they read an entry, and refuse a revoked kid at once. Entries are signed like
// those of the other streams.
const StreamKeys = "caracal.keys"

// Kinds of KeysEvent.
const (
	// KeysRotate: a next key was published; it signs from ActivatesAt.
	KeysRotate = "rotate"
	// KeysRevoke: the kids in Revoked must be refused from now on; the new key signs at once.
	KeysRevoke = "revoke"
)

const (
	fieldKeysEvent   = "event"
	fieldKID         = "kid"
	fieldRevokedKIDs = "revoked_kids"
	fieldActivatesAt = "activates_at"
)

// MaxRevokedPerEntry is the most kids one caracal.keys revoke entry may name.
const MaxRevokedPerEntry = 8

// KeysEvent is one caracal.keys entry.
type KeysEvent struct {
	ZoneID string
	Event  string // rotate | revoke
	// KID is the zone's new key.
	KID string
	// ActivatesAt is when KID starts signing.
	ActivatesAt time.Time
	// Revoked are the kids refused from now on (revoke only).
	Revoked []string
	// ExpiresAt is when the last mandate a revoked key can have signed expires; after it
	// the revocation no longer matters (revoke only).
	ExpiresAt time.Time
}

// Fields returns the stream fields (without sig), times in unix milliseconds.
func (e KeysEvent) Fields() map[string]string {
	f := map[string]string{
		fieldZoneID:      e.ZoneID,
		fieldKeysEvent:   e.Event,
		fieldKID:         e.KID,
		fieldActivatesAt: strconv.FormatInt(e.ActivatesAt.UnixMilli(), 10),
	}
	if e.Event == KeysRevoke {
		f[fieldRevokedKIDs] = strings.Join(e.Revoked, " ")
		f[fieldExpiresAt] = strconv.FormatInt(e.ExpiresAt.UnixMilli(), 10)
	}
	return f
}

// ParseKeysEvent reads a caracal.keys entry as strictly as ParseEvent: known fields
// only, zone id syntax, printable kids, integer millisecond times; a revoke names at
// least one revoked kid and its expiry. It does not check sig.
func ParseKeysEvent(fields map[string]string) (KeysEvent, error) {
	var e KeysEvent
	var revoked, expires bool
	for k, v := range fields {
		var err error
		switch k {
		case fieldZoneID:
			err = checkZoneID(v)
			e.ZoneID = v
		case fieldKeysEvent:
			if v != KeysRotate && v != KeysRevoke {
				err = errors.New("not rotate or revoke")
			}
			e.Event = v
		case fieldKID:
			err = checkID(v)
			e.KID = v
		case fieldActivatesAt:
			e.ActivatesAt, err = parseMillis(v)
		case fieldRevokedKIDs:
			revoked = true
			e.Revoked = strings.Fields(v)
			if len(e.Revoked) == 0 || len(e.Revoked) > MaxRevokedPerEntry {
				err = fmt.Errorf("must list 1 to %d kids", MaxRevokedPerEntry)
			}
			for _, kid := range e.Revoked {
				if err == nil {
					err = checkID(kid)
				}
			}
		case fieldExpiresAt:
			expires = true
			e.ExpiresAt, err = parseMillis(v)
		case fieldSig:
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return KeysEvent{}, fmt.Errorf("keys event field %.64q: %w", k, err)
		}
	}
	switch {
	case e.ZoneID == "":
		return KeysEvent{}, errors.New("keys event: zone_id missing")
	case e.Event == "":
		return KeysEvent{}, errors.New("keys event: event missing")
	case e.KID == "":
		return KeysEvent{}, errors.New("keys event: kid missing")
	case e.ActivatesAt.IsZero():
		return KeysEvent{}, errors.New("keys event: activates_at missing")
	case e.Event == KeysRevoke && (!revoked || !expires):
		return KeysEvent{}, errors.New("keys event: a revoke needs revoked_kids and expires_at")
	case e.Event == KeysRotate && (revoked || expires):
		return KeysEvent{}, errors.New("keys event: a rotate carries no revoked_kids or expires_at")
	}
	return e, nil
}

// KeyWatchers hands caracal.keys entries to the verifiers of a process, by zone. It
// remembers revoked kids until their expiry, so that a verifier subscribing after the
// entry was read (a gateway provisioned later, a config reload) still refuses them.
type KeyWatchers struct {
	now func() time.Time

	mu      sync.Mutex
	next    int
	subs    map[string]map[int]func(KeysEvent)
	all     map[int]func(KeysEvent)         // subscribers to every zone
	revoked map[string]map[string]KeysEvent // zone → kid → the revoke naming it
}

// NewKeyWatchers returns an empty set of watchers; now is the clock (time.Now when nil).
func NewKeyWatchers(now func() time.Time) *KeyWatchers {
	if now == nil {
		now = time.Now
	}
	return &KeyWatchers{now: now, subs: map[string]map[int]func(KeysEvent){}, all: map[int]func(KeysEvent){}, revoked: map[string]map[string]KeysEvent{}}
}

// SubscribeAll calls fn for every entry of every zone from now on (an STS, which serves
// zones it loads on demand, drops its cached key set on each). Unlike Subscribe it does
// not replay earlier revocations: a subscriber that starts later reads the keys from
// storage, where a revocation is written before its entry is sent. fn runs on the
// transport's goroutine and must not block. The returned function ends the subscription.
func (w *KeyWatchers) SubscribeAll(fn func(KeysEvent)) (cancel func()) {
	w.mu.Lock()
	w.next++
	id := w.next
	w.all[id] = fn
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.all, id)
		w.mu.Unlock()
	}
}

// Subscribe calls fn for every entry of the zone from now on, after calling it once for
// each revocation of the zone that still matters. fn runs on the transport's goroutine
// and must not block. The returned function ends the subscription.
func (w *KeyWatchers) Subscribe(zoneID string, fn func(KeysEvent)) (cancel func()) {
	w.mu.Lock()
	w.next++
	id := w.next
	if w.subs[zoneID] == nil {
		w.subs[zoneID] = map[int]func(KeysEvent){}
	}
	w.subs[zoneID][id] = fn
	w.sweepLocked(zoneID)
	for _, e := range w.revoked[zoneID] {
		fn(e)
	}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.subs[zoneID], id)
		if len(w.subs[zoneID]) == 0 {
			delete(w.subs, zoneID)
		}
		w.mu.Unlock()
	}
}

// Notify records a revocation and calls the zone's subscribers.
func (w *KeyWatchers) Notify(e KeysEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sweepLocked(e.ZoneID)
	if e.Event == KeysRevoke && e.ExpiresAt.After(w.now()) {
		if w.revoked[e.ZoneID] == nil {
			w.revoked[e.ZoneID] = map[string]KeysEvent{}
		}
		for _, kid := range e.Revoked {
			w.revoked[e.ZoneID][kid] = e
		}
	}
	for _, fn := range w.subs[e.ZoneID] {
		fn(e)
	}
	for _, fn := range w.all {
		fn(e)
	}
}

// sweepLocked forgets the zone's revocations that no longer matter.
func (w *KeyWatchers) sweepLocked(zoneID string) {
	now := w.now()
	for kid, e := range w.revoked[zoneID] {
		if !e.ExpiresAt.After(now) {
			delete(w.revoked[zoneID], kid)
		}
	}
	if len(w.revoked[zoneID]) == 0 {
		delete(w.revoked, zoneID)
	}
}

// applyKeys verifies and hands a caracal.keys entry to the watchers; without watchers
// the entry is not this applier's.
func (a *applier) applyKeys(fields map[string]string) {
	if a.keys == nil {
		return
	}
	if len(a.key) > 0 && !VerifySignature(a.key, StreamKeys, fields) {
		a.badSignature.Add(1)
		a.warnBadSignatures()
		return
	}
	e, err := ParseKeysEvent(fields)
	if err != nil {
		a.malformed.Add(1)
		a.log.Debug("dropped malformed keys entry", zap.Error(err))
		return
	}
	a.applied.Add(1)
	a.keys.Notify(e)
}

// AttachWithKeys is AttachLogged that also hands caracal.keys entries to keys.
func (b *Bus) AttachWithKeys(st *RevokedSet, ep *Epochs, key []byte, log *zap.Logger, keys *KeyWatchers) Source {
	if log == nil {
		log = zap.NewNop()
	}
	return b.attach(st, ep, key, log, keys)
}
