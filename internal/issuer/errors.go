package issuer

import (
	"net/http"
	"strconv"

	"github.com/caracalgw/caracal/internal/httpjson"
)

// OAuth error codes of RFC 6749 section 5.2, RFC 6749 section 4.1.2.1, RFC 7009,
// RFC 8693 and RFC 8707 used by docs/protocol.md section 2.3.
const (
	CodeInvalidRequest          = "invalid_request"
	CodeInvalidClient           = "invalid_client"
	CodeInvalidGrant            = "invalid_grant"
	CodeUnsupportedGrantType    = "unsupported_grant_type"
	CodeUnsupportedResponseType = "unsupported_response_type"
	CodeInvalidScope            = "invalid_scope"
	CodeInvalidTarget           = "invalid_target"
	CodeAccessDenied            = "access_denied"
	CodeSlowDown                = "slow_down"
	CodeUnavailable             = "temporarily_unavailable"
	CodeUnsupportedTokenType    = "unsupported_token_type"
	CodeNotFound                = "not_found"
)

// Error is a refusal of the STS, answered over HTTP as RFC 6749 section 5.2 JSON. Every
// error Exchange returns is an *Error; use errors.As to read it.
type Error struct {
	// Status is the HTTP status of the answer.
	Status int `json:"-"`
	// Code is the OAuth error code, one of the Code constants.
	Code string `json:"error"`
	// Description says which check refused the request.
	Description string `json:"error_description,omitempty"`
	// basic asks for a WWW-Authenticate: Basic challenge (invalid_client after Basic auth).
	basic bool
	// retryAfter is the Retry-After value in seconds for slow_down.
	retryAfter int
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

// RetryAfter is how many seconds the caller should wait before retrying (0: no advice).
func (e *Error) RetryAfter() int { return e.retryAfter }

func newError(status int, code, description string) *Error {
	return &Error{Status: status, Code: code, Description: description}
}

func badRequest(description string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidRequest, description)
}

func invalidGrant(description string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidGrant, description)
}

func invalidTarget(description string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidTarget, description)
}

func invalidScope(description string) *Error {
	return newError(http.StatusBadRequest, CodeInvalidScope, description)
}

func unavailable(description string) *Error {
	return newError(http.StatusServiceUnavailable, CodeUnavailable, description)
}

func writeError(w http.ResponseWriter, realm string, e *Error) {
	h := w.Header()
	httpjson.NoStore(h)
	if e.basic {
		h.Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	httpjson.Write(w, e.Status, e)
}
