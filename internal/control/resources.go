package control

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/store"
)

type resourceRequest struct {
	Identifier string   `json:"identifier"`
	Scopes     []string `json:"scopes"`
}

type resourceResponse struct {
	ZoneID     string   `json:"zone_id"`
	ID         string   `json:"id"`
	Identifier string   `json:"identifier"`
	Scopes     []string `json:"scopes"`
	Archived   bool     `json:"archived"`
}

// createResource: POST /v1/zones/{zone}/resources (admin, write). The STS of this
// process sees the resource at once.
func (s *Service) createResource(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireAdmin(r, zoneID, true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	var req resourceRequest
	if aerr := readJSON(r, maxBody, &req, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if len(req.Identifier) > maxIdentifierLen {
		s.fail(w, r, badRequest(fmt.Sprintf("identifier must be at most %d bytes", maxIdentifierLen)))
		return
	}
	if aerr := checkScopeList(req.Scopes); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if err := issuer.ValidateResource(req.Identifier, req.Scopes); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	res := store.Resource{ZoneID: zoneID, ID: store.NewID(store.ResourceIDPrefix), Identifier: req.Identifier, Scopes: req.Scopes, CreatedAt: s.now()}
	if err := s.store.CreateResource(r.Context(), res); err != nil {
		if errors.Is(err, store.ErrConflict) {
			s.fail(w, r, conflict("resource "+req.Identifier+" already exists in this zone"))
			return
		}
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	s.sts.Invalidate(zoneID)
	s.audit(r.Context(), c, zoneID, "resource.create", res.Identifier, map[string]any{"scopes": res.Scopes})
	writeJSON(w, http.StatusCreated, resourceResponse{ZoneID: zoneID, ID: res.ID, Identifier: res.Identifier, Scopes: res.Scopes})
}
