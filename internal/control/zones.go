package control

import (
	"errors"
	"net/http"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

type zoneRequest struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type zoneResponse struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Epoch int64  `json:"epoch"`
}

// emptyRequest is the body of endpoints that take no parameters: absent, or {}.
type emptyRequest struct{}

// createZone: POST /v1/zones (global admin, write). The STS creates the zone together
// with its first signing key.
func (s *Service) createZone(w http.ResponseWriter, r *http.Request) {
	c, aerr := s.requireAdmin(r, "", true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	var req zoneRequest
	if aerr := readJSON(r, maxBody, &req, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if !mandate.ValidZoneID(req.ID) {
		s.fail(w, r, badRequest("id must match "+mandate.ZoneIDSyntax))
		return
	}
	if aerr := checkName("name", req.Name); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if err := s.sts.CreateZone(r.Context(), req.ID, req.Name); err != nil {
		if errors.Is(err, store.ErrConflict) {
			s.fail(w, r, conflict("zone "+req.ID+" already exists"))
			return
		}
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	s.audit(r.Context(), c, req.ID, "zone.create", req.ID, map[string]string{"name": req.Name})
	writeJSON(w, http.StatusCreated, zoneResponse{ID: req.ID, Name: req.Name})
}

type rotateResponse struct {
	ZoneID string `json:"zone_id"`
	KID    string `json:"kid"`
}

// rotateKey: POST /v1/zones/{zone}/keys/rotate (admin, write). The retired key stays in
// the JWKS until every mandate it signed has expired.
func (s *Service) rotateKey(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireAdmin(r, zoneID, true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if aerr := readJSON(r, maxBody, &emptyRequest{}, true); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	kid, err := s.sts.RotateKey(r.Context(), zoneID)
	if err != nil {
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	s.audit(r.Context(), c, zoneID, "key.rotate", kid, nil)
	writeJSON(w, http.StatusOK, rotateResponse{ZoneID: zoneID, KID: kid})
}
