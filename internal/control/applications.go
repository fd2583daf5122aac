package control

import (
	"errors"
	"net/http"

	"github.com/caracalgw/caracal/internal/secret"
	"github.com/caracalgw/caracal/internal/store"
)

// clientIDPrefix marks generated client ids.
const clientIDPrefix = "app_"

type applicationRequest struct {
	ClientID string `json:"client_id"`
	Name     string `json:"name"`
}

type applicationResponse struct {
	ZoneID       string `json:"zone_id"`
	ClientID     string `json:"client_id"`
	Name         string `json:"name"`
	ClientSecret string `json:"client_secret"`
}

// createApplication: POST /v1/zones/{zone}/applications (admin, write). The secret is
// generated here, returned once and stored only as its Argon2id hash.
func (s *Service) createApplication(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireAdmin(r, zoneID, true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	var req applicationRequest
	if aerr := readJSON(r, maxBody, &req, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if req.ClientID == "" {
		req.ClientID = store.NewID(clientIDPrefix)
	}
	if !clientIDPattern.MatchString(req.ClientID) {
		s.fail(w, r, badRequest("client_id must match "+clientIDPattern.String()))
		return
	}
	if aerr := checkName("name", req.Name); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	sec, err := secret.Generate()
	if err != nil {
		s.fail(w, r, unavailable("a client secret could not be generated"))
		return
	}
	hash, err := secret.Hash(sec)
	if err != nil {
		s.fail(w, r, unavailable("the client secret could not be hashed"))
		return
	}
	app := store.Application{ZoneID: zoneID, ClientID: req.ClientID, Name: req.Name, SecretHash: hash, CreatedAt: s.now()}
	if err := s.store.CreateApplication(r.Context(), app); err != nil {
		if errors.Is(err, store.ErrConflict) {
			s.fail(w, r, conflict("application "+req.ClientID+" already exists in this zone"))
			return
		}
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	s.audit(r.Context(), c, zoneID, "application.create", app.ClientID, map[string]string{"name": app.Name})
	writeJSON(w, http.StatusCreated, applicationResponse{ZoneID: zoneID, ClientID: app.ClientID, Name: app.Name, ClientSecret: sec})
}
