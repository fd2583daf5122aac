package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/revocation"
)

// maxPolicyError bounds the compiler message echoed to the uploader.
const maxPolicyError = 2048

type policyRequest struct {
	Modules map[string]string `json:"modules"`
	Data    json.RawMessage   `json:"data"`
}

type policyResponse struct {
	ZoneID  string `json:"zone_id"`
	Version int64  `json:"version"`
}

// putPolicy: PUT /v1/zones/{zone}/policy (admin, write). The bundle is compiled in the
// STS's sandbox, limits and compiler pool before it is stored, so an invalid upload (a
// denied built-in, a bundle over a limit) leaves the active version in place, and a
// second upload while the zone's first is compiling is refused (409). The STS of this
// process uses the compiled version from the next exchange on;
// other processes learn of it from the caracal.policy.invalidate stream (or their
// refresh interval).
func (s *Service) putPolicy(w http.ResponseWriter, r *http.Request) {
	zoneID := r.PathValue("zone")
	c, aerr := s.requireAdmin(r, zoneID, true)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	var req policyRequest
	if aerr := readJSON(r, maxPolicyBody, &req, false); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	if aerr := checkModules(req.Modules); aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	compiled, err := s.sts.CompilePolicy(r.Context(), zoneID, req.Modules, req.Data)
	if err != nil {
		msg := err.Error()
		if len(msg) > maxPolicyError {
			msg = strings.ToValidUTF8(msg[:maxPolicyError], "") + "..."
		}
		if errors.Is(err, policy.ErrBusy) {
			s.fail(w, r, conflict(msg))
			return
		}
		s.fail(w, r, badRequest("invalid policy bundle: "+msg))
		return
	}
	b, err := s.store.PutPolicyBundle(r.Context(), zoneID, req.Modules, req.Data, s.now())
	if err != nil {
		s.fail(w, r, s.storeError(err, "zone"))
		return
	}
	s.sts.InstallPolicy(zoneID, b.Version, compiled)
	s.sts.Invalidate(zoneID)
	// The bundle is stored and active; what follows only tells other processes sooner.
	ctx := context.WithoutCancel(r.Context())
	row := store.OutboxEvent{
		ZoneID:    zoneID,
		Stream:    revocation.StreamPolicyInvalidate,
		Fields:    revocation.PolicyEvent{ZoneID: zoneID, Version: b.Version}.Fields(),
		CreatedAt: s.now(),
	}
	if _, err := s.store.AppendOutbox(ctx, row); err != nil {
		s.log.Warn("policy invalidation not queued; other processes pick the bundle up at their next refresh",
			zap.String("zone", zoneID), zap.Int64("version", b.Version), zap.Error(err))
	} else {
		s.notify()
	}
	s.audit(ctx, c, zoneID, "policy.put", strconv.FormatInt(b.Version, 10), nil)
	writeJSON(w, http.StatusOK, policyResponse{ZoneID: zoneID, Version: b.Version})
}

// checkModules requires named modules whose names and sources storage keeps as given
// (PostgreSQL refuses NUL in text).
func checkModules(modules map[string]string) *apiError {
	if len(modules) == 0 {
		return badRequest("modules must hold at least one Rego module")
	}
	for name, src := range modules {
		if aerr := checkName("module name", name); aerr != nil {
			return aerr
		}
		if strings.ContainsFunc(src, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' }) {
			return badRequest(fmt.Sprintf("module %.64q contains control characters", name))
		}
	}
	return nil
}
