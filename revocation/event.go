package revocation

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caracalgw/caracal/mandate"
)

// Stream names of docs/protocol.md section 6. Signatures cover these logical names, never the
// Redis key (which may carry a deployment prefix).
const (
	StreamSessionsRevoke       = "caracal.sessions.revoke"
	StreamDelegationInvalidate = "caracal.delegations.invalidate"
	// StreamPolicyInvalidate tells other processes that a zone's active policy bundle
	// changed; consumers that miss it pick the bundle up at their next refresh.
	StreamPolicyInvalidate = "caracal.policy.invalidate"
)

// The event field values of a caracal.delegations.invalidate entry.
const (
	EpochCreate = "create"
	EpochRevoke = "revoke"
	EpochExpire = "expire"
)

// Field names of the stream entries.
const (
	fieldZoneID     = "zone_id"
	fieldSessionID  = "session_id"
	fieldEdgeAnchor = "delegation_edge_id"
	fieldReason     = "reason"
	fieldRevokedAt  = "revoked_at"
	fieldExpiresAt  = "expires_at"
	fieldEpoch      = "epoch"
	fieldEdgeID     = "edge_id"
	fieldEvent      = "event"
	fieldVersion    = "version"
	fieldSig        = "sig"
	maxMillisDigits = 15 // up to the year 33658; more is not a timestamp
	maxEpochDigits  = 19 // int64
)

// MaxReasonLen bounds the reason of a revocation event, in bytes. CleanReason brings any
// text within the bound, so producers never emit an entry consumers would drop.
const MaxReasonLen = 256

// Event is one caracal.sessions.revoke entry. Exactly one of SessionID and
// DelegationEdgeID is set: the anchor every mandate carrying it loses validity by.
type Event struct {
	ZoneID           string
	SessionID        string
	DelegationEdgeID string
	Reason           string
	RevokedAt        time.Time
	// ExpiresAt is when the last mandate that can carry the anchor expires; after it
	// (plus ExpiryGrace) the entry no longer matters.
	ExpiresAt time.Time
}

// Fields returns the stream fields of docs/protocol.md section 6 (without sig), with times in
// unix milliseconds.
func (e Event) Fields() map[string]string {
	f := map[string]string{
		fieldZoneID:    e.ZoneID,
		fieldReason:    e.Reason,
		fieldRevokedAt: strconv.FormatInt(e.RevokedAt.UnixMilli(), 10),
		fieldExpiresAt: strconv.FormatInt(e.ExpiresAt.UnixMilli(), 10),
	}
	if e.SessionID != "" {
		f[fieldSessionID] = e.SessionID
	}
	if e.DelegationEdgeID != "" {
		f[fieldEdgeAnchor] = e.DelegationEdgeID
	}
	return f
}

// ParseEvent reads a caracal.sessions.revoke entry. It is strict about everything that
// decides what gets revoked (zone id syntax, exactly one anchor, integer millisecond
// times, bounded lengths, no unknown fields besides sig) and lenient only about a
// missing reason, which is informational. It does not check sig: see VerifySignature.
func ParseEvent(fields map[string]string) (Event, error) {
	var e Event
	for k, v := range fields {
		var err error
		switch k {
		case fieldZoneID:
			err = checkZoneID(v)
			e.ZoneID = v
		case fieldSessionID:
			err = checkID(v)
			e.SessionID = v
		case fieldEdgeAnchor:
			err = checkID(v)
			e.DelegationEdgeID = v
		case fieldReason:
			err = checkReason(v)
			e.Reason = v
		case fieldRevokedAt:
			e.RevokedAt, err = parseMillis(v)
		case fieldExpiresAt:
			e.ExpiresAt, err = parseMillis(v)
		case fieldSig:
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return Event{}, fmt.Errorf("revocation event field %.64q: %w", k, err)
		}
	}
	switch {
	case e.ZoneID == "":
		return Event{}, errors.New("revocation event: zone_id missing")
	case e.SessionID == "" && e.DelegationEdgeID == "":
		return Event{}, errors.New("revocation event: neither session_id nor delegation_edge_id")
	case e.SessionID != "" && e.DelegationEdgeID != "":
		return Event{}, errors.New("revocation event: both session_id and delegation_edge_id")
	case e.RevokedAt.IsZero():
		return Event{}, errors.New("revocation event: revoked_at missing")
	case e.ExpiresAt.IsZero():
		return Event{}, errors.New("revocation event: expires_at missing")
	}
	return e, nil
}

// EpochEvent is one caracal.delegations.invalidate entry: the zone's delegation graph
// epoch after an edge was created, revoked or expired.
type EpochEvent struct {
	ZoneID string
	Epoch  int64
	EdgeID string
	Event  string // EpochCreate | EpochRevoke | EpochExpire
}

// Fields returns the stream fields (without sig).
func (e EpochEvent) Fields() map[string]string {
	return map[string]string{
		fieldZoneID: e.ZoneID,
		fieldEpoch:  strconv.FormatInt(e.Epoch, 10),
		fieldEdgeID: e.EdgeID,
		fieldEvent:  e.Event,
	}
}

// ParseEpochEvent reads a caracal.delegations.invalidate entry with the same
// strictness as ParseEvent; every field but sig is required.
func ParseEpochEvent(fields map[string]string) (EpochEvent, error) {
	var (
		e        EpochEvent
		hasEpoch bool
	)
	for k, v := range fields {
		var err error
		switch k {
		case fieldZoneID:
			err = checkZoneID(v)
			e.ZoneID = v
		case fieldEpoch:
			e.Epoch, err = parseDigits(v, maxEpochDigits)
			hasEpoch = true
		case fieldEdgeID:
			err = checkID(v)
			e.EdgeID = v
		case fieldEvent:
			if v != EpochCreate && v != EpochRevoke && v != EpochExpire {
				err = errors.New("not create, revoke or expire")
			}
			e.Event = v
		case fieldSig:
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return EpochEvent{}, fmt.Errorf("epoch event field %.64q: %w", k, err)
		}
	}
	switch {
	case e.ZoneID == "":
		return EpochEvent{}, errors.New("epoch event: zone_id missing")
	case !hasEpoch:
		return EpochEvent{}, errors.New("epoch event: epoch missing")
	case e.EdgeID == "":
		return EpochEvent{}, errors.New("epoch event: edge_id missing")
	case e.Event == "":
		return EpochEvent{}, errors.New("epoch event: event missing")
	}
	return e, nil
}

// PolicyEvent is one caracal.policy.invalidate entry: the zone's active policy bundle
// is now Version.
type PolicyEvent struct {
	ZoneID  string
	Version int64
}

// Fields returns the stream fields (without sig).
func (e PolicyEvent) Fields() map[string]string {
	return map[string]string{
		fieldZoneID:  e.ZoneID,
		fieldVersion: strconv.FormatInt(e.Version, 10),
	}
}

// PublishFields returns the entry a publisher appends to stream for fields, which are
// left untouched: any sig they carry is dropped, the reason of a caracal.sessions.revoke
// entry is brought within what strict consumers accept (CleanReason: a dropped
// revocation would be far worse than an altered reason), and the entry is signed when
// key is set.
func PublishFields(key []byte, stream string, fields map[string]string) map[string]string {
	f := make(map[string]string, len(fields)+1)
	for k, v := range fields {
		if k != fieldSig {
			f[k] = v
		}
	}
	if reason, ok := f[fieldReason]; ok && stream == StreamSessionsRevoke {
		f[fieldReason] = CleanReason(reason)
	}
	if len(key) > 0 {
		f[fieldSig] = Sign(key, stream, f)
	}
	return f
}

// CleanReason turns free text into a reason every consumer accepts: control characters
// become spaces, invalid UTF-8 is replaced, and the result is cut to MaxReasonLen bytes
// on a character boundary.
func CleanReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= MaxReasonLen {
		return s
	}
	cut := MaxReasonLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// checkZoneID accepts the zone id syntax (mandate.ValidZoneID).
func checkZoneID(v string) error {
	if !mandate.ValidZoneID(v) {
		return errors.New("zone id does not match " + mandate.ZoneIDSyntax)
	}
	return nil
}

// checkID accepts the record id syntax (mandate.ValidRecordID).
func checkID(v string) error {
	if !mandate.ValidRecordID(v) {
		return fmt.Errorf("id must be 1 to %d bytes of printable ASCII without space", mandate.MaxRecordIDLen)
	}
	return nil
}

// ValidReason reports whether v is a reason every consumer accepts: at most
// MaxReasonLen bytes of UTF-8 without control characters (CleanReason makes one).
func ValidReason(v string) bool { return checkReason(v) == nil }

func checkReason(v string) error {
	if len(v) > MaxReasonLen {
		return fmt.Errorf("reason longer than %d bytes", MaxReasonLen)
	}
	if !utf8.ValidString(v) {
		return errors.New("reason is not UTF-8")
	}
	if strings.ContainsFunc(v, unicode.IsControl) {
		return errors.New("reason has a control character")
	}
	return nil
}

func parseMillis(v string) (time.Time, error) {
	ms, err := parseDigits(v, maxMillisDigits)
	if err != nil {
		return time.Time{}, err
	}
	if ms == 0 {
		return time.Time{}, errors.New("time is zero")
	}
	return time.UnixMilli(ms), nil
}

// parseDigits accepts only a plain decimal number: strconv alone would also take a sign.
func parseDigits(v string, maxDigits int) (int64, error) {
	if v == "" || len(v) > maxDigits {
		return 0, fmt.Errorf("not a decimal number of 1 to %d digits", maxDigits)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, errors.New("not a decimal number")
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number out of range: %w", err)
	}
	return n, nil
}
