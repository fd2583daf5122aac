package mandate

// Error is a verification failure. Reason names the failed check and is what errors.Is compares
// against the Err* values; Detail is a human-readable description that never quotes the token, so it
// is safe to put in an error_description or a log line.
type Error struct {
	Reason string
	Detail string
	// Err is the underlying cause, when there is one (a key source failure, a cancelled context).
	Err error
}

// Error returns the detail.
func (e *Error) Error() string { return e.Detail }

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same reason, so that errors.Is(err, ErrExpired)
// holds for every expiry failure whatever its detail.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// Reasons of verification failures, one per check of docs/protocol.md section 3 in that order. Compare with
// errors.Is.
var (
	ErrTooLarge       error = &Error{Reason: "too_large", Detail: "mandate: token exceeds 8192 bytes"}
	ErrMalformed      error = &Error{Reason: "malformed", Detail: "mandate: malformed token"}
	ErrAlgorithm      error = &Error{Reason: "algorithm", Detail: "mandate: algorithm is not ES256"}
	ErrType           error = &Error{Reason: "type", Detail: "mandate: wrong token type"}
	ErrUnknownKey     error = &Error{Reason: "unknown_key", Detail: "mandate: unknown signing key"}
	ErrSignature      error = &Error{Reason: "signature", Detail: "mandate: invalid signature"}
	ErrIssuer         error = &Error{Reason: "issuer", Detail: "mandate: wrong issuer"}
	ErrAudience       error = &Error{Reason: "audience", Detail: "mandate: wrong audience"}
	ErrUse            error = &Error{Reason: "use", Detail: "mandate: wrong use"}
	ErrExpired        error = &Error{Reason: "expired", Detail: "mandate: token expired"}
	ErrNotYetValid    error = &Error{Reason: "not_yet_valid", Detail: "mandate: token not yet valid"}
	ErrIssuedInFuture error = &Error{Reason: "issued_in_future", Detail: "mandate: token issued in the future"}
	ErrZone           error = &Error{Reason: "zone", Detail: "mandate: wrong zone"}
	// ErrKeysUnavailable: the key source could not answer (no key set was ever fetched, or the
	// context ended while waiting). Unlike the others it says nothing about the token, so callers
	// should treat it as a temporary failure rather than an invalid token.
	ErrKeysUnavailable error = &Error{Reason: "keys_unavailable", Detail: "mandate: signing keys unavailable"}
)

// fail builds an error of the given reason with a specific detail.
func fail(reason error, detail string) *Error {
	return &Error{Reason: reason.(*Error).Reason, Detail: "mandate: " + detail}
}
