package control

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/caracalgw/caracal/internal/delegation"
	"github.com/caracalgw/caracal/internal/store"
)

const edgeIDPrefix = "edg_"

type delegationRequest struct {
	TargetSessionID string   `json:"target_session_id"`
	Resource        string   `json:"resource"`
	Scopes          []string `json:"scopes"`
	TTLSeconds      int64    `json:"ttl_seconds"`
	MaxHops         *int     `json:"max_hops"`
	ParentEdgeID    string   `json:"parent_edge_id"`
}

type edgeView struct {
	ID              string   `json:"id"`
	ZoneID          string   `json:"zone_id"`
	SourceSessionID string   `json:"source_session_id"`
	TargetSessionID string   `json:"target_session_id"`
	Resource        string   `json:"resource"`
	Scopes          []string `json:"scopes"`
	ExpiresAt       string   `json:"expires_at"`
	MaxHops         int      `json:"max_hops"`
	ParentEdgeID    *string  `json:"parent_edge_id"` // null for a root edge
	Status          string   `json:"status"`         // active | revoked | expired
	// Epoch is the zone epoch right after the edge was created.
	Epoch     int64  `json:"epoch"`
	CreatedAt string `json:"created_at"`
	RevokedAt string `json:"revoked_at,omitempty"`
}

type edgeRevocation struct {
	RevokedEdges []string `json:"revoked_edges"`
	Epoch        int64    `json:"epoch"`
	Published    bool     `json:"published"` // as in sessionRevocation
}

type epochResponse struct {
	ZoneID string `json:"zone_id"`
	Epoch  int64  `json:"epoch"`
}

// viewEdge reports the effective status: an active edge past its expiry is expired
// even before the sweep records it.
func viewEdge(e store.Edge, now time.Time) edgeView {
	v := edgeView{
		ID:              e.ID,
		ZoneID:          e.ZoneID,
		SourceSessionID: e.SourceSessionID,
		TargetSessionID: e.TargetSessionID,
		Resource:        e.Resource,
		Scopes:          e.Scopes,
		ExpiresAt:       timestamp(e.ExpiresAt),
		MaxHops:         e.MaxHops,
		Status:          e.Status,
		Epoch:           e.Epoch,
		CreatedAt:       timestamp(e.CreatedAt),
	}
	if v.Status == store.StatusActive && !now.Before(e.ExpiresAt) {
		v.Status = store.StatusExpired
	}
	if e.ParentEdgeID != "" {
		parent := e.ParentEdgeID
		v.ParentEdgeID = &parent
	}
	if !e.RevokedAt.IsZero() {
		v.RevokedAt = timestamp(e.RevokedAt)
	}
	return v
}

// createDelegation: POST /v1/zones/{zone}/delegations, by the source session with its
// session mandate. The rules of docs/protocol.md section 4 (package delegation) are
// checked first against what was read, then again inside the creating transaction
// against the locked graph.
func (s *Service) createDelegation(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireSource(r, zoneID)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	var req delegationRequest
	if aerr := readJSON(r, maxBody, &req, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if aerr := req.check(); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	plan, aerr := s.planEdge(r.Context(), zoneID, *c.session, req)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	created, err := s.store.CreateEdge(r.Context(), plan.edge, plan.recheck(s.now))
	if err != nil {
		s.fail(w, r, s.storeError(err, "session or parent edge"))
		return
	}
	s.notify()
	s.audit(r.Context(), c, zoneID, "delegation.create", created.ID, map[string]any{
		"target_session_id": created.TargetSessionID, "resource": created.Resource, "scopes": created.Scopes,
		"parent_edge_id": created.ParentEdgeID, "epoch": created.Epoch,
	})
	writeJSON(w, http.StatusCreated, viewEdge(created, s.now()))
}

// requireSource authenticates the session that creates an edge. Admin tokens cannot
// create edges; they still get the zone-scope and capability answers first, like on
// every other endpoint.
func (s *Service) requireSource(r *http.Request, zoneID string) (*caller, *apiError) {
	tok, aerr := bearer(r)
	if aerr != nil {
		return nil, aerr
	}
	if looksLikeJWT(tok) {
		return s.sessionCaller(r.Context(), zoneID, tok)
	}
	c, aerr := s.adminCaller(r.Context(), tok)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := c.allow(zoneID, true); aerr != nil {
		return nil, aerr
	}
	return nil, forbidden("delegation edges are created by their source session, with its session mandate")
}

// check validates the request's shape.
func (req *delegationRequest) check() *apiError {
	if aerr := checkID("target_session_id", req.TargetSessionID); aerr != nil {
		return aerr
	}
	if req.Resource == "" || len(req.Resource) > maxIdentifierLen {
		return badRequest(fmt.Sprintf("resource must be a resource identifier of 1 to %d bytes", maxIdentifierLen))
	}
	if aerr := checkScopeList(req.Scopes); aerr != nil {
		return aerr
	}
	if req.TTLSeconds <= 0 {
		return badRequest("ttl_seconds must be a positive number of seconds")
	}
	if req.MaxHops != nil && (*req.MaxHops < 1 || *req.MaxHops > delegation.MaxMaxHops) {
		return badRequest(fmt.Sprintf("max_hops must be between 1 and %d", delegation.MaxMaxHops))
	}
	if req.ParentEdgeID != "" {
		return checkID("parent_edge_id", req.ParentEdgeID)
	}
	return nil
}

// edgePlan is an edge ready to be created and what it was checked against.
type edgePlan struct {
	edge store.Edge
	// path runs from the root edge to the parent; empty for a root edge.
	path     []store.Edge
	clientID string // the source session's client
}

// planEdge reads the target session, the resource and the parent's path, computes the
// expiry (now + ttl, clamped to the source and target sessions' and the parent's
// expiry) and checks every rule against what it read.
func (s *Service) planEdge(ctx context.Context, zoneID string, source store.Session, req delegationRequest) (*edgePlan, *apiError) {
	now := s.now()
	if req.TargetSessionID == source.ID {
		return nil, badRequest("target_session_id must differ from the source session")
	}
	target, err := s.store.GetSession(ctx, zoneID, req.TargetSessionID)
	if err != nil {
		return nil, s.storeError(err, "target session")
	}
	if why := delegation.SessionProblem(target, now); why != "" {
		return nil, badRequest("target " + why)
	}
	res, err := s.store.GetResource(ctx, zoneID, req.Resource)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, badRequest("resource is not registered in this zone")
	case err != nil:
		return nil, s.storeError(err, "resource")
	case res.Archived:
		return nil, badRequest("resource is archived")
	}
	for _, sc := range req.Scopes {
		if !slices.Contains(res.Scopes, sc) {
			return nil, badRequest(fmt.Sprintf("scope %q is not declared by the resource", sc))
		}
	}
	limits := []time.Time{source.ExpiresAt, target.ExpiresAt}
	var path []store.Edge
	if req.ParentEdgeID != "" {
		if path, err = s.store.EdgePath(ctx, zoneID, req.ParentEdgeID); err != nil {
			return nil, s.storeError(err, "parent edge")
		}
		limits = append(limits, path[len(path)-1].ExpiresAt)
	}
	hops := delegation.DefaultMaxHops
	if req.MaxHops != nil {
		hops = *req.MaxHops
	}
	p := &edgePlan{
		edge: store.Edge{
			ZoneID:          zoneID,
			ID:              store.NewID(edgeIDPrefix),
			SourceSessionID: source.ID,
			TargetSessionID: target.ID,
			Resource:        res.Identifier,
			Scopes:          slices.Clone(req.Scopes),
			ExpiresAt:       delegation.Expiry(now, req.TTLSeconds, limits...),
			MaxHops:         hops,
			ParentEdgeID:    req.ParentEdgeID,
			CreatedAt:       now,
		},
		path:     path,
		clientID: source.ClientID,
	}
	if aerr := checkEdge(p.edge, path, source, target, p.clientID, now); aerr != nil {
		return nil, aerr
	}
	return p, nil
}

// recheck is the store.EdgeCheck of the plan: the same rules against the sessions and
// the parent as locked by the creating transaction. Parts of an edge other than its
// status never change, so the ancestors read before still describe the path above the
// parent; a revoked ancestor shows as a revoked parent (revocation cascades down). It
// does not call the Store.
func (p *edgePlan) recheck(now func() time.Time) store.EdgeCheck {
	return func(parent *store.Edge, source, target store.Session) error {
		path := p.path
		if parent != nil {
			if len(path) == 0 || !sameEdge(*parent, path[len(path)-1]) {
				return badRequest("the parent edge changed while the delegation was created; retry")
			}
			path = append(slices.Clone(path[:len(path)-1]), *parent)
		}
		if aerr := checkEdge(p.edge, path, source, target, p.clientID, now()); aerr != nil {
			return aerr
		}
		return nil
	}
}

// sameEdge compares the parts of an edge that never change.
func sameEdge(a, b store.Edge) bool {
	return a.ID == b.ID && a.SourceSessionID == b.SourceSessionID && a.TargetSessionID == b.TargetSessionID &&
		a.Resource == b.Resource && slices.Equal(a.Scopes, b.Scopes) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.MaxHops == b.MaxHops && a.ParentEdgeID == b.ParentEdgeID
}

// checkEdge applies the creation rules (delegation.CheckCreation) to e. path runs from
// the root edge to e's parent (empty for a root edge). Every violation is a 400 naming
// the rule, except a source session that stopped being valid, which invalidates the
// caller's own mandate (401).
func checkEdge(e store.Edge, path []store.Edge, source, target store.Session, clientID string, now time.Time) *apiError {
	v := delegation.CheckCreation(e, path, source, target, clientID, now)
	switch {
	case v == nil:
		return nil
	case v.Caller:
		return invalidToken(v.Message)
	}
	return badRequest(v.Message)
}

// revokeDelegation: POST /v1/zones/{zone}/delegations/{id}/revoke, by the edge's source
// session or an admin (write). The edge and its active descendants are revoked, the
// epoch bumped and the stream entries queued in one transaction.
func (s *Service) revokeDelegation(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireCaller(r, zoneID, true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	fallback := reasonAdmin
	if c.session != nil {
		fallback = reasonSource
	}
	reason, aerr := readReason(r, fallback)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	id := r.PathValue("id")
	if checkID("edge id", id) != nil {
		s.fail(w, r, notFound("delegation edge not found"))
		return
	}
	if c.session != nil {
		e, err := s.store.GetEdge(r.Context(), zoneID, id)
		if err != nil {
			s.fail(w, r, s.storeError(err, "delegation edge"))
			return
		}
		if e.SourceSessionID != c.session.ID {
			s.fail(w, r, forbidden("only the edge's source session or an admin can revoke it"))
			return
		}
	}
	rev, err := s.store.RevokeEdge(r.Context(), zoneID, id, reason, s.now())
	if err != nil {
		s.fail(w, r, s.storeError(err, "delegation edge"))
		return
	}
	published := s.revoked(r.Context(), zoneID, rev, len(rev.Edges) > 0, "delegation edge "+id)
	ids := edgeIDs(rev.Edges)
	s.audit(r.Context(), c, zoneID, "delegation.revoke", id, map[string]any{"reason": reason, "revoked_edges": ids, "epoch": rev.Epoch})
	writeJSON(w, http.StatusOK, edgeRevocation{RevokedEdges: ids, Epoch: rev.Epoch, Published: published})
}

// getDelegation: GET /v1/zones/{zone}/delegations/{id}, by an admin (read) or the
// edge's source or target session.
func (s *Service) getDelegation(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireCaller(r, zoneID, false)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	id := r.PathValue("id")
	if checkID("edge id", id) != nil {
		s.fail(w, r, notFound("delegation edge not found"))
		return
	}
	e, err := s.store.GetEdge(r.Context(), zoneID, id)
	if err != nil {
		s.fail(w, r, s.storeError(err, "delegation edge"))
		return
	}
	if c.session != nil && e.SourceSessionID != c.session.ID && e.TargetSessionID != c.session.ID {
		s.fail(w, r, forbidden("only an admin or the edge's source or target session can read it"))
		return
	}
	writeJSON(w, http.StatusOK, viewEdge(e, s.now()))
}

// getEpoch: GET /v1/zones/{zone}/epoch, by any verified caller of the zone.
func (s *Service) getEpoch(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	if _, aerr := s.requireCaller(r, zoneID, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	epoch, err := s.store.Epoch(r.Context(), zoneID)
	if err != nil {
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	writeJSON(w, http.StatusOK, epochResponse{ZoneID: zoneID, Epoch: epoch})
}
