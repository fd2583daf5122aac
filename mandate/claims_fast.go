package mandate

import "strconv"

// decodeClaimsFast reads the claims of a mandate in the plain shape a Signer writes
// (json.Marshal of Claims), without a JSON decoder and with one
// allocation for all its strings: the payload is turned into one string and every field
// is a piece of it. It accepts only a subset of JSON: one object, no white space, the
// known members each at most once, strings of printable ASCII without escapes, integers
// of plain decimal digits that fit their field, and delegation_path as an array of such
// strings, act as an object of sub and act members (nested at most maxFastActDepth
// deep). Anything else, even valid JSON, is reported false and left to the JSON
// decoder, so that every payload this function accepts decodes to exactly the same
// claims there (FuzzDecodeClaims holds the two to that).
func decodeClaimsFast(payload []byte, c *Claims) bool {
	s := string(payload)
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return false
	}
	var seen uint32
	i := 1
	if s[i] == '}' {
		return i == len(s)-1
	}
	for {
		key, next, ok := plainString(s, i)
		if !ok || next >= len(s) || s[next] != ':' {
			return false
		}
		i = next + 1
		bit, ok := claimBit(key)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		switch key {
		case "iss", "sub", "aud", "jti", "zone_id", "client_id", "sid", "root_sid", "use", "scope", "delegation_edge_id":
			v, next, ok := plainString(s, i)
			if !ok {
				return false
			}
			*claimString(c, key) = v
			i = next
		case "exp", "iat", "nbf", "delegation_graph_epoch", "hop_count":
			v, next, ok := plainInt(s, i, key == "hop_count")
			if !ok {
				return false
			}
			switch key {
			case "exp":
				c.Expiry = v
			case "iat":
				c.IssuedAt = v
			case "nbf":
				c.NotBefore = v
			case "delegation_graph_epoch":
				c.DelegationGraphEpoch = v
			default:
				c.HopCount = int(v)
			}
			i = next
		case "act":
			act, next, ok := plainActor(s, i, 0)
			if !ok {
				return false
			}
			c.Act = act
			i = next
		case "delegation_path":
			path, next, ok := plainStrings(s, i)
			if !ok {
				return false
			}
			c.DelegationPath = path
			i = next
		}
		if i >= len(s) {
			return false
		}
		switch s[i] {
		case ',':
			i++
		case '}':
			return i == len(s)-1
		default:
			return false
		}
	}
}

// fastClaimNames are the members decodeClaimsFast knows, each with its bit in seen.
var fastClaimNames = [...]string{
	"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "zone_id", "client_id", "sid",
	"root_sid", "use", "scope", "delegation_edge_id", "delegation_path", "hop_count",
	"delegation_graph_epoch", "act",
}

// maxFastActDepth bounds the act nesting decodeClaimsFast reads itself; deeper chains
// go to the JSON decoder.
const maxFastActDepth = 16

// plainActor reads an act object at s[i]: members sub (a plain string) and act (another
// such object), each at most once, in either order.
func plainActor(s string, i, depth int) (*Actor, int, bool) {
	if depth >= maxFastActDepth || i+1 >= len(s) || s[i] != '{' {
		return nil, 0, false
	}
	a := &Actor{}
	i++
	if s[i] == '}' {
		return a, i + 1, true
	}
	var sawSub, sawAct bool
	for {
		key, next, ok := plainString(s, i)
		if !ok || next >= len(s) || s[next] != ':' {
			return nil, 0, false
		}
		i = next + 1
		switch {
		case key == "sub" && !sawSub:
			sawSub = true
			if a.Sub, i, ok = plainString(s, i); !ok {
				return nil, 0, false
			}
		case key == "act" && !sawAct:
			sawAct = true
			if a.Act, i, ok = plainActor(s, i, depth+1); !ok {
				return nil, 0, false
			}
		default:
			return nil, 0, false
		}
		if i >= len(s) {
			return nil, 0, false
		}
		switch s[i] {
		case ',':
			i++
		case '}':
			return a, i + 1, true
		default:
			return nil, 0, false
		}
	}
}

func claimBit(key string) (uint32, bool) {
	for n, name := range fastClaimNames {
		if key == name {
			return 1 << n, true
		}
	}
	return 0, false
}

func claimString(c *Claims, key string) *string {
	switch key {
	case "iss":
		return &c.Issuer
	case "sub":
		return &c.Subject
	case "aud":
		return &c.Audience
	case "jti":
		return &c.ID
	case "zone_id":
		return &c.ZoneID
	case "client_id":
		return &c.ClientID
	case "sid":
		return &c.SID
	case "root_sid":
		return &c.RootSID
	case "use":
		return &c.Use
	case "scope":
		return &c.Scope
	default:
		return &c.DelegationEdgeID
	}
}

// plainString reads a JSON string at s[i] whose bytes are printable ASCII other than the
// quote and the backslash, so that its value is its bytes; it returns the value and the
// index after the closing quote.
func plainString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i+1 : j], j + 1, true
		case c < 0x20 || c == '\\' || c >= 0x7f:
			return "", 0, false
		}
	}
	return "", 0, false
}

// plainInt reads a JSON integer at s[i] written as json.Marshal writes one (no sign,
// fraction, exponent or leading zero) that fits an int64, or an int when small is set.
func plainInt(s string, i int, small bool) (int64, int, bool) {
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == i || (s[i] == '0' && j > i+1) {
		return 0, 0, false
	}
	bits := 64
	if small {
		bits = strconv.IntSize
	}
	v, err := strconv.ParseInt(s[i:j], 10, bits)
	if err != nil {
		return 0, 0, false
	}
	return v, j, true
}

// plainStrings reads a JSON array of plain strings (see plainString) at s[i].
func plainStrings(s string, i int) ([]string, int, bool) {
	if i+1 >= len(s) || s[i] != '[' {
		return nil, 0, false
	}
	i++
	out := []string{}
	if s[i] == ']' {
		return out, i + 1, true
	}
	for {
		v, next, ok := plainString(s, i)
		if !ok || next >= len(s) {
			return nil, 0, false
		}
		out = append(out, v)
		switch s[next] {
		case ',':
			i = next + 1
		case ']':
			return out, next + 1, true
		default:
			return nil, 0, false
		}
	}
}
