package mandate

// ZoneIDSyntax is the zone id syntax of docs/protocol.md section 1, as a regular
// expression for messages. ValidZoneID checks it without a regexp: it runs for every
// stream entry and request path.
const ZoneIDSyntax = `^[a-z0-9][a-z0-9._-]{0,62}$`

// MaxZoneIDLen bounds a zone id, in bytes.
const MaxZoneIDLen = 63

// ValidZoneID reports whether s is a zone id: 1 to 63 bytes of [a-z0-9._-] starting with
// [a-z0-9] (ZoneIDSyntax).
func ValidZoneID(s string) bool {
	if s == "" || len(s) > MaxZoneIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			continue
		}
		if i == 0 || c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// MaxRecordIDLen bounds a record id (session, delegation edge, admin token), in bytes.
const MaxRecordIDLen = 256

// ValidRecordID reports whether s is a record id as mandates and revocation stream
// entries carry it: 1 to MaxRecordIDLen bytes of printable ASCII without space, so
// that an id can never smuggle a line into a signed stream entry.
func ValidRecordID(s string) bool {
	if s == "" || len(s) > MaxRecordIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// ValidScopeToken reports whether s is an RFC 6749 section 3.3 scope token:
// 1*( %x21 / %x23-5B / %x5D-7E ), that is printable ASCII without space, '"' or '\'.
// It bounds no length: callers that store scopes apply their own bound.
func ValidScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
