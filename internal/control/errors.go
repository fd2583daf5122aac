package control

import (
	"errors"
	"net/http"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caracalgw/caracal/internal/httpjson"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/verify"
)

// Error codes of docs/protocol.md section 5.
const (
	codeInvalidRequest = "invalid_request"
	codeInvalidToken   = "invalid_token"
	codeZoneForbidden  = "zone_forbidden"
	codeForbidden      = "forbidden"
	codeNotFound       = "not_found"
	codeConflict       = "conflict"
	codeUnavailable    = "temporarily_unavailable"
)

// realm names the Coordinator in WWW-Authenticate challenges.
const realm = "caracal-coordinator"

// apiError is a refused request, answered as {"error","error_description"}.
type apiError struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description"`
	// noToken marks a 401 for a request without a bearer token: RFC 6750 section 3.1
	// wants a challenge without error attributes then.
	noToken bool
}

func (e *apiError) Error() string { return e.Code + ": " + e.Description }

func badRequest(description string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeInvalidRequest, Description: description}
}

func invalidToken(description string) *apiError {
	return &apiError{Status: http.StatusUnauthorized, Code: codeInvalidToken, Description: description}
}

func forbidden(description string) *apiError {
	return &apiError{Status: http.StatusForbidden, Code: codeForbidden, Description: description}
}

func notFound(description string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: codeNotFound, Description: description}
}

func conflict(description string) *apiError {
	return &apiError{Status: http.StatusConflict, Code: codeConflict, Description: description}
}

func unavailable(description string) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Description: description}
}

var errZoneForbidden = &apiError{Status: http.StatusForbidden, Code: codeZoneForbidden,
	Description: "this admin token is scoped to another zone"}

// storeError turns a storage failure into an answer. Only the sentinel meaning is
// exposed; the details (SQL, constraint names) go to the log. Anything that is not a
// clear "not found" or "conflict" is treated as unavailability: never a guess, never a
// 500 with internals.
func (s *Service) storeError(err error, what string) *apiError {
	var aerr *apiError
	switch {
	case errors.As(err, &aerr):
		return aerr
	case errors.Is(err, store.ErrNotFound):
		return notFound(what + " not found")
	case errors.Is(err, store.ErrConflict):
		return conflict(what + " already exists")
	}
	s.log.Warn("storage failure", zap.String("subject", what), zap.Error(err))
	return unavailable("storage is unavailable; retry later")
}

// writeJSON answers with v. Every Coordinator answer either carries a secret or
// describes state that changes, so none is cached or content-sniffed.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	httpjson.NoStore(h)
	h.Set("X-Content-Type-Options", "nosniff")
	httpjson.Write(w, status, v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	switch e.Status {
	case http.StatusUnauthorized:
		challenge := &verify.Error{Status: e.Status, Code: e.Code, Description: e.Description}
		if e.noToken {
			challenge.Code = ""
		}
		h.Set("WWW-Authenticate", verify.Challenge(realm, challenge))
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, e)
}

// fail answers a refused request. Refusals are routine (a wrong token, a rule of the
// graph), so they log at debug level; storage failures were logged where they happened.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	if c := s.log.Check(zapcore.DebugLevel, "coordinator request refused"); c != nil {
		c.Write(zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.Int("status", e.Status), zap.String("error", e.Code), zap.String("reason", e.Description))
	}
	writeError(w, e)
}
