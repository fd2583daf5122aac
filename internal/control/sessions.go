package control

import (
	"context"
	"net/http"
	"time"

	"github.com/caracalgw/caracal/internal/delegation"
	"github.com/caracalgw/caracal/internal/store"
)

// Default revocation reasons, when the request gives none.
const (
	reasonAdmin  = "revoked by an administrator"
	reasonSource = "revoked by the source session"
)

// revokeRequest is the optional body of the revoke endpoints.
type revokeRequest struct {
	Reason string `json:"reason"`
}

type sessionView struct {
	ZoneID       string `json:"zone_id"`
	SID          string `json:"sid"`
	ClientID     string `json:"client_id"`
	Status       string `json:"status"` // active | revoked | expired
	CreatedAt    string `json:"created_at"`
	ExpiresAt    string `json:"expires_at"`
	RevokedAt    string `json:"revoked_at,omitempty"`
	RevokeReason string `json:"revoke_reason,omitempty"`
}

type sessionRevocation struct {
	Session      sessionView `json:"session"`
	RevokedEdges []string    `json:"revoked_edges"`
	Epoch        int64       `json:"epoch"`
	// Published is false when the stream entries were not yet published when the
	// answer left (the transport is down or slow): the revocation is durable and holds
	// in this process, and the relay keeps trying.
	Published bool `json:"published"`
}

// deadSession says why a session cannot act, or returns "" when it is active and
// unexpired.
func deadSession(sess store.Session, now time.Time) string {
	return delegation.SessionProblem(sess, now)
}

// viewSession reports the effective status: an active session past its expiry is
// expired even though storage only records active and revoked.
func viewSession(sess store.Session, now time.Time) sessionView {
	v := sessionView{
		ZoneID:       sess.ZoneID,
		SID:          sess.ID,
		ClientID:     sess.ClientID,
		Status:       sess.Status,
		CreatedAt:    timestamp(sess.CreatedAt),
		ExpiresAt:    timestamp(sess.ExpiresAt),
		RevokeReason: sess.RevokeReason,
	}
	if v.Status == store.StatusActive && !now.Before(sess.ExpiresAt) {
		v.Status = store.StatusExpired
	}
	if !sess.RevokedAt.IsZero() {
		v.RevokedAt = timestamp(sess.RevokedAt)
	}
	return v
}

// getSession: GET /v1/zones/{zone}/sessions/{sid} (admin, read).
func (s *Service) getSession(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	if _, aerr := s.requireAdmin(r, zoneID, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	sid := r.PathValue("sid")
	if checkID("sid", sid) != nil {
		s.fail(w, r, notFound("session not found"))
		return
	}
	sess, err := s.store.GetSession(r.Context(), zoneID, sid)
	if err != nil {
		s.fail(w, r, s.storeError(err, "session"))
		return
	}
	writeJSON(w, http.StatusOK, viewSession(sess, s.now()))
}

// revokeSession: POST /v1/zones/{zone}/sessions/{sid}/revoke (admin, write). Storage
// revokes the session and, in the same transaction, every edge it is the source or
// target of with their descendants, bumps the epoch and queues the stream entries.
func (s *Service) revokeSession(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireAdmin(r, zoneID, true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	reason, aerr := readReason(r, reasonAdmin)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	sid := r.PathValue("sid")
	if checkID("sid", sid) != nil {
		s.fail(w, r, notFound("session not found"))
		return
	}
	rev, err := s.store.RevokeSession(r.Context(), zoneID, sid, reason, s.now())
	if err != nil {
		s.fail(w, r, s.storeError(err, "session"))
		return
	}
	// Revoking a revoked session writes nothing; a spurious wake-up only costs the
	// relay an empty read, and waiting still covers rows of the first revoke that are
	// not yet published.
	published := s.revoked(r.Context(), zoneID, rev, true, "session "+sid)
	ids := edgeIDs(rev.Edges)
	s.audit(r.Context(), c, zoneID, "session.revoke", sid, map[string]any{"reason": reason, "revoked_edges": ids, "epoch": rev.Epoch})
	writeJSON(w, http.StatusOK, sessionRevocation{Session: viewSession(*rev.Session, s.now()), RevokedEdges: ids, Epoch: rev.Epoch, Published: published})
}

// revoked makes a stored revocation hold in this process at once (revocation set,
// epoch, the STS's cached rows), wakes the relay when the store wrote rows (changed),
// then waits, within the STS's bound, for the relay to publish every pending row; it
// reports whether they were published.
func (s *Service) revoked(ctx context.Context, zoneID string, rev store.Revocation, changed bool, what string) bool {
	s.sts.ApplyRevocation(zoneID, rev)
	if changed {
		s.notify()
	}
	return s.sts.AwaitPublication(ctx, zoneID, what)
}

// readReason reads the optional {"reason"} body of a revoke call.
func readReason(r *http.Request, fallback string) (string, *apiError) {
	var req revokeRequest
	if aerr := readJSON(r, maxBody, &req, true); aerr != nil {
		return "", aerr
	}
	if aerr := checkReason(req.Reason); aerr != nil {
		return "", aerr
	}
	if req.Reason == "" {
		return fallback, nil
	}
	return req.Reason, nil
}

func edgeIDs(edges []store.Edge) []string {
	ids := make([]string, len(edges))
	for i, e := range edges {
		ids[i] = e.ID
	}
	return ids
}
