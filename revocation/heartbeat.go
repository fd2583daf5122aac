package revocation

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Heartbeat fields. A heartbeat shares the caracal.sessions.revoke stream with the
// revocation entries; its "type" field (which ParseEvent refuses as unknown) keeps
// consumers that predate heartbeats from mistaking it for a revocation.
const (
	fieldType      = "type"
	fieldPublisher = "publisher"
	fieldWatermark = "watermark"
	fieldSentAt    = "sent_at"
	typeHeartbeat  = "heartbeat"
)

// DefaultHeartbeatInterval is how often a publisher appends a heartbeat.
const DefaultHeartbeatInterval = time.Second

// Heartbeat is a publisher's signed statement on caracal.sessions.revoke: every
// revocation committed to storage before Watermark has already been appended to the
// stream, ahead of this entry. A consumer that has applied the heartbeat therefore holds
// every revocation acknowledged before Watermark, and its staleness is the age of the
// newest watermark it applied.
type Heartbeat struct {
	// Publisher names the relay instance that sent it, for whoever reads the stream.
	Publisher string
	// Watermark: everything committed before it has been published.
	Watermark time.Time
	// SentAt is when the heartbeat was appended, by the publisher's clock.
	SentAt time.Time
}

// Fields returns the stream fields (without sig), with times in unix milliseconds.
func (h Heartbeat) Fields() map[string]string {
	return map[string]string{
		fieldType:      typeHeartbeat,
		fieldPublisher: h.Publisher,
		fieldWatermark: strconv.FormatInt(h.Watermark.UnixMilli(), 10),
		fieldSentAt:    strconv.FormatInt(h.SentAt.UnixMilli(), 10),
	}
}

// IsHeartbeat reports whether a caracal.sessions.revoke entry claims to be a heartbeat.
// It says nothing about validity: see ParseHeartbeat and VerifySignature.
func IsHeartbeat(fields map[string]string) bool {
	return fields[fieldType] == typeHeartbeat
}

// ParseHeartbeat reads a heartbeat entry with the same strictness as ParseEvent: every
// field but sig is required, no other field is allowed, and the watermark may not lie
// after the time the heartbeat was sent.
func ParseHeartbeat(fields map[string]string) (Heartbeat, error) {
	var (
		h      Heartbeat
		isType bool
	)
	for k, v := range fields {
		var err error
		switch k {
		case fieldType:
			if v != typeHeartbeat {
				err = errors.New("not heartbeat")
			}
			isType = true
		case fieldPublisher:
			err = checkID(v)
			h.Publisher = v
		case fieldWatermark:
			h.Watermark, err = parseMillis(v)
		case fieldSentAt:
			h.SentAt, err = parseMillis(v)
		case fieldSig:
		default:
			err = errors.New("unknown field")
		}
		if err != nil {
			return Heartbeat{}, fmt.Errorf("heartbeat field %.64q: %w", k, err)
		}
	}
	switch {
	case !isType:
		return Heartbeat{}, errors.New("heartbeat: type missing")
	case h.Publisher == "":
		return Heartbeat{}, errors.New("heartbeat: publisher missing")
	case h.Watermark.IsZero():
		return Heartbeat{}, errors.New("heartbeat: watermark missing")
	case h.SentAt.IsZero():
		return Heartbeat{}, errors.New("heartbeat: sent_at missing")
	case h.Watermark.After(h.SentAt):
		return Heartbeat{}, errors.New("heartbeat: watermark after sent_at")
	}
	return h, nil
}

// SignedFields returns Fields with the sig of docs/protocol.md section 6 over
// caracal.sessions.revoke added when key is set.
func (h Heartbeat) SignedFields(key []byte) map[string]string {
	return PublishFields(key, StreamSessionsRevoke, h.Fields())
}
