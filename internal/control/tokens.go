package control

import (
	"crypto/sha256"
	"net/http"

	"github.com/caracalgw/caracal/internal/secret"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// adminTokenPrefix makes minted admin tokens recognisable (in a secret scanner, in a
// leaked log line); adminTokenIDPrefix does the same for their public ids.
const (
	adminTokenPrefix   = "cat_"
	adminTokenIDPrefix = "adm_"
)

type adminTokenRequest struct {
	ZoneID     string `json:"zone_id"`
	Capability string `json:"capability"`
}

type adminTokenResponse struct {
	ID         string  `json:"id"`
	Token      string  `json:"token"`
	ZoneID     *string `json:"zone_id"` // null for a global token
	Capability string  `json:"capability"`
}

type adminTokenRevoked struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// createAdminToken: POST /v1/admin-tokens (global admin, write). The token is shown
// once; only its SHA-256 is stored.
func (s *Service) createAdminToken(w http.ResponseWriter, r *http.Request) {
	c, aerr := s.requireAdmin(r, "", true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	var req adminTokenRequest
	if aerr := readJSON(r, maxBody, &req, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if req.Capability != capabilityRead && req.Capability != capabilityWrite {
		s.fail(w, r, badRequest(`capability must be "read" or "write"`))
		return
	}
	var zone *string
	if req.ZoneID != "" {
		if !mandate.ValidZoneID(req.ZoneID) {
			s.fail(w, r, badRequest("zone_id must match "+mandate.ZoneIDSyntax))
			return
		}
		if aerr := s.zoneExists(r.Context(), req.ZoneID); aerr != nil {
			s.fail(w, r, aerr)
			return
		}
		zone = &req.ZoneID
	}
	sec, err := secret.Generate()
	if err != nil {
		s.fail(w, r, unavailable("a token could not be generated"))
		return
	}
	tok := adminTokenPrefix + sec
	hash := sha256.Sum256([]byte(tok))
	t := store.AdminToken{
		ID:         store.NewID(adminTokenIDPrefix),
		ZoneID:     req.ZoneID,
		Capability: req.Capability,
		Hash:       hash[:],
		CreatedAt:  s.now(),
	}
	if err := s.store.CreateAdminToken(r.Context(), t); err != nil {
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	s.audit(r.Context(), c, req.ZoneID, "admin_token.create", t.ID, map[string]string{"capability": t.Capability})
	writeJSON(w, http.StatusCreated, adminTokenResponse{ID: t.ID, Token: tok, ZoneID: zone, Capability: t.Capability})
}

// revokeAdminToken: POST /v1/admin-tokens/{id}/revoke (global admin, write). The token
// is refused from the next request on; revoking it again changes nothing.
func (s *Service) revokeAdminToken(w http.ResponseWriter, r *http.Request) {
	c, aerr := s.requireAdmin(r, "", true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if aerr := readJSON(r, maxBody, &emptyRequest{}, true); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	id := r.PathValue("id")
	if checkID("admin token id", id) != nil {
		s.fail(w, r, notFound("admin token not found"))
		return
	}
	if err := s.store.RevokeAdminToken(r.Context(), id, s.now()); err != nil {
		s.fail(w, r, s.storeError(err, "admin token"))
		return
	}
	s.audit(r.Context(), c, "", "admin_token.revoke", id, nil)
	writeJSON(w, http.StatusOK, adminTokenRevoked{ID: id, Status: store.StatusRevoked})
}
