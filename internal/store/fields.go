package store

import (
	"strconv"
	"time"
)

// The outbox rows written by the atomic methods carry exactly the stream fields of
// docs/protocol.md section 6 (without `sig`, which the publisher adds), as strings, with times
// in unix milliseconds.

// SessionRevokeFields is a caracal.sessions.revoke entry for a session.
func SessionRevokeFields(zoneID, sid, reason string, revokedAt, expiresAt time.Time) map[string]string {
	return map[string]string{
		"zone_id":    zoneID,
		"session_id": sid,
		"reason":     reason,
		"revoked_at": unixMilli(revokedAt),
		"expires_at": unixMilli(expiresAt),
	}
}

// EdgeRevokeFields is a caracal.sessions.revoke entry for a delegation edge.
func EdgeRevokeFields(zoneID, edgeID, reason string, revokedAt, expiresAt time.Time) map[string]string {
	return map[string]string{
		"zone_id":            zoneID,
		"delegation_edge_id": edgeID,
		"reason":             reason,
		"revoked_at":         unixMilli(revokedAt),
		"expires_at":         unixMilli(expiresAt),
	}
}

// InvalidateFields is a caracal.delegations.invalidate entry.
func InvalidateFields(zoneID string, epoch int64, edgeID, event string) map[string]string {
	return map[string]string{
		"zone_id": zoneID,
		"epoch":   strconv.FormatInt(epoch, 10),
		"edge_id": edgeID,
		"event":   event,
	}
}

func unixMilli(t time.Time) string {
	return strconv.FormatInt(t.UnixMilli(), 10)
}
