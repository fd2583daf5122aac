package verify

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
)

// Error is a refusal with its RFC 6750 answer.
type Error struct {
	// Status is 401, 403 or 503.
	Status int
	// Code is the RFC 6750 error code (invalid_request, invalid_token,
	// insufficient_scope), empty for a missing token and for 503.
	Code string
	// Description is safe to send: it never quotes the token.
	Description string
	// Scope lists the required scopes, for insufficient_scope.
	Scope string
	// RetryAfter is the Retry-After of a 503 in seconds (1 when zero).
	RetryAfter int
}

func (e *Error) Error() string {
	if e.Code == "" {
		return e.Description
	}
	return e.Code + ": " + e.Description
}

func invalidToken(desc string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: desc}
}

// ErrNoToken is the answer to a request without a bearer token (RFC 6750 section 3.1: no
// error code).
var ErrNoToken = &Error{Status: http.StatusUnauthorized, Description: "a bearer mandate is required"}

// BearerToken extracts the token of the request's single `Authorization: Bearer` header.
// Query-string and cookie tokens are never looked at. The token must have the b64token
// syntax of RFC 6750 section 2.1, so whatever it returns is one run of printable ASCII
// without white space.
func BearerToken(r *http.Request) (string, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", ErrNoToken
	}
	if len(values) > 1 {
		return "", &Error{Status: http.StatusBadRequest, Code: "invalid_request", Description: "more than one Authorization header"}
	}
	// Optional white space around a field value is not part of it (RFC 9110 section 5.5);
	// net/http strips it on the wire, but a handler may be called with a built request.
	scheme, token, _ := strings.Cut(strings.Trim(values[0], " \t"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// Another scheme is no bearer token at all: RFC 6750 section 3.1 wants no error
		// code then.
		return "", ErrNoToken
	}
	token = strings.TrimLeft(token, " ")
	if !isB64Token(token) {
		return "", &Error{Status: http.StatusBadRequest, Code: "invalid_request", Description: "malformed bearer token"}
	}
	return token, nil
}

// b64TokenChars marks the bytes of RFC 6750's b64token: ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" (a table: this runs on every request).
var b64TokenChars = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c], t[c+'a'-'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~+/" {
		t[c] = true
	}
	return t
}()

// isB64Token matches 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	body := strings.TrimRight(s, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		if !b64TokenChars[body[i]] {
			return false
		}
	}
	return true
}

// WriteError answers a refusal per RFC 6750 section 3 with a WWW-Authenticate challenge
// (503 carries Retry-After instead). Any other error is a 500 without details.
func WriteError(w http.ResponseWriter, realm string, err error) {
	var e *Error
	if !errors.As(err, &e) {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	SetErrorHeaders(w.Header(), realm, e)
	http.Error(w, e.Description, e.Status)
}

// SetErrorHeaders sets the header fields of e's answer (what WriteError sends besides
// the status and body): Cache-Control, and the WWW-Authenticate challenge or, for a 503,
// Retry-After. A server that writes its own body for the refusal calls this first.
func SetErrorHeaders(h http.Header, realm string, e *Error) {
	h.Set("Cache-Control", "no-store")
	if e.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", strconv.Itoa(max(e.RetryAfter, 1)))
	} else {
		h.Set("WWW-Authenticate", Challenge(realm, e))
	}
}

// Challenge renders the WWW-Authenticate value for e.
func Challenge(realm string, e *Error) string {
	var b strings.Builder
	b.WriteString(`Bearer realm="`)
	b.WriteString(quote(realm))
	b.WriteByte('"')
	if e.Code != "" {
		b.WriteString(`, error="`)
		b.WriteString(e.Code)
		b.WriteString(`", error_description="`)
		b.WriteString(quote(e.Description))
		b.WriteByte('"')
	}
	if e.Scope != "" {
		b.WriteString(`, scope="`)
		b.WriteString(quote(e.Scope))
		b.WriteByte('"')
	}
	return b.String()
}

// quote keeps a value inside an RFC 7230 quoted-string: RFC 6750 allows only
// %x20-21 / %x23-5B / %x5D-7E in these attributes, so anything else is replaced.
func quote(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '?'
		}
		return r
	}, s)
}
