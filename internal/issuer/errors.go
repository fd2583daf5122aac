package issuer

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// OAuth error codes of RFC 6749 section 5.2, RFC 8693 and RFC 8707 used by docs/protocol.md section 2.3.
const (
	codeInvalidRequest       = "invalid_request"
	codeInvalidClient        = "invalid_client"
	codeInvalidGrant         = "invalid_grant"
	codeUnsupportedGrantType = "unsupported_grant_type"
	codeInvalidScope         = "invalid_scope"
	codeInvalidTarget        = "invalid_target"
	codeAccessDenied         = "access_denied"
	codeSlowDown             = "slow_down"
	codeUnavailable          = "temporarily_unavailable"
	codeUnsupportedTokenType = "unsupported_token_type"
	codeNotFound             = "not_found"
)

// oauthError is a protocol error answered as RFC 6749 section 5.2 JSON.
type oauthError struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	// basic asks for a WWW-Authenticate: Basic challenge (invalid_client after Basic auth).
	basic bool
	// retryAfter is the Retry-After value in seconds for slow_down.
	retryAfter int
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

func newError(status int, code, description string) *oauthError {
	return &oauthError{Status: status, Code: code, Description: description}
}

func badRequest(description string) *oauthError {
	return newError(http.StatusBadRequest, codeInvalidRequest, description)
}

func invalidGrant(description string) *oauthError {
	return newError(http.StatusBadRequest, codeInvalidGrant, description)
}

func unavailable(description string) *oauthError {
	return newError(http.StatusServiceUnavailable, codeUnavailable, description)
}

func noStore(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"server_error"}`)
	}
	// A trailing newline, as json.Encoder writes: answers printed by curl end their line.
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, realm string, e *oauthError) {
	noStore(w)
	if e.basic {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	writeJSON(w, e.Status, e)
}
