package control

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

// Bounds on stored strings. Identifiers also travel in mandates (8 KiB at most) and
// stream entries, so they stay short and printable.
const (
	maxNameLen       = 200
	maxIdentifierLen = 2048
	maxScopes        = 256
)

// clientIDPattern keeps client ids safe in Basic credentials, headers and logs.
var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$`)

// checkName accepts a human-readable name: 1 to maxNameLen bytes, no control characters.
func checkName(field, v string) *apiError {
	if v == "" || len(v) > maxNameLen {
		return badRequest(fmt.Sprintf("%s must be 1 to %d bytes", field, maxNameLen))
	}
	if strings.ContainsFunc(v, unicode.IsControl) {
		return badRequest(field + " must not contain control characters")
	}
	return nil
}

// checkID accepts a record id (session, edge, admin token) as mandates and the
// revocation streams carry it (mandate.ValidRecordID).
func checkID(field, v string) *apiError {
	if !mandate.ValidRecordID(v) {
		return badRequest(fmt.Sprintf("%s must be 1 to %d bytes of printable ASCII without spaces", field, mandate.MaxRecordIDLen))
	}
	return nil
}

// checkReason accepts an optional revocation reason that stream consumers accept as is.
func checkReason(v string) *apiError {
	if !revocation.ValidReason(v) {
		return badRequest(fmt.Sprintf("reason must be at most %d bytes without control characters", revocation.MaxReasonLen))
	}
	return nil
}

// checkScopeList accepts a non-empty list of distinct RFC 6749 scope tokens.
func checkScopeList(scopes []string) *apiError {
	if len(scopes) == 0 {
		return badRequest("scopes must list at least one scope")
	}
	if len(scopes) > maxScopes {
		return badRequest(fmt.Sprintf("scopes must list at most %d scopes", maxScopes))
	}
	for i, sc := range scopes {
		if len(sc) > maxNameLen || !mandate.ValidScopeToken(sc) {
			return badRequest(fmt.Sprintf("scope %.64q is not a valid scope token", sc))
		}
		if slices.Contains(scopes[:i], sc) {
			return badRequest(fmt.Sprintf("scope %q is listed twice", sc))
		}
	}
	return nil
}
