package control

import (
	"errors"
	"net/http"
	"strings"

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

// rotateRequest is the optional body of a rotation. Immediate (or ?immediate=true)
// is for a compromised key.
type rotateRequest struct {
	Immediate bool `json:"immediate"`
}

type rotateResponse struct {
	ZoneID      string   `json:"zone_id"`
	KID         string   `json:"kid"`
	Immediate   bool     `json:"immediate"`
	ActivatesAt string   `json:"activates_at"`
	Revoked     []string `json:"revoked_kids"`
}

// rotateKey: POST /v1/zones/{zone}/keys/rotate (admin, write). The new key is published
// at once and signs after the key activation delay; the retired key stays in the JWKS
// until every mandate it signed has expired. An immediate rotation signs with the new
// key at once and revokes the signing key everywhere. A delayed rotation while another
// is pending is 409.
func (s *Service) rotateKey(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireAdmin(r, zoneID, true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	var req rotateRequest
	if aerr := readJSON(r, maxBody, &req, true); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	switch q := r.URL.Query().Get("immediate"); q {
	case "":
	case "true", "1":
		req.Immediate = true
	case "false", "0":
	default:
		s.fail(w, r, badRequest("immediate must be true or false"))
		return
	}
	rot, err := s.sts.RotateKey(r.Context(), zoneID, req.Immediate)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			s.fail(w, r, conflict("a rotation of zone "+zoneID+" is pending; wait for its activation or rotate immediately"))
			return
		}
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	action := "key.rotate"
	if req.Immediate {
		action = "key.rotate_immediate"
	}
	s.audit(r.Context(), c, zoneID, action, rot.KID, map[string]string{"revoked_kids": strings.Join(rot.Revoked, " ")})
	writeJSON(w, http.StatusOK, rotateResponse{ZoneID: zoneID, KID: rot.KID, Immediate: req.Immediate,
		ActivatesAt: timestamp(rot.ActivatesAt), Revoked: nonNilStrings(rot.Revoked)})
}

type keyView struct {
	KID         string `json:"kid"`
	State       string `json:"state"`
	ActivatesAt string `json:"activates_at"`
	RetiredAt   string `json:"retired_at,omitempty"`
	NotAfter    string `json:"not_after,omitempty"`
}

type keysResponse struct {
	ZoneID string    `json:"zone_id"`
	Keys   []keyView `json:"keys"`
}

// listKeys: GET /v1/zones/{zone}/keys (admin, read). The published keys and what each is
// for now: next (published, not signing yet), signing, retired.
func (s *Service) listKeys(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	if _, aerr := s.requireAdmin(r, zoneID, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	states, err := s.sts.KeyStates(r.Context(), zoneID)
	if err != nil {
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	resp := keysResponse{ZoneID: zoneID, Keys: make([]keyView, 0, len(states))}
	for _, k := range states {
		v := keyView{KID: k.KID, State: k.State, ActivatesAt: timestamp(k.ActivatesAt)}
		if !k.RetiredAt.IsZero() {
			v.RetiredAt, v.NotAfter = timestamp(k.RetiredAt), timestamp(k.NotAfter)
		}
		resp.Keys = append(resp.Keys, v)
	}
	writeJSON(w, http.StatusOK, resp)
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
