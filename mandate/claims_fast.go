package mandate

import "strconv"

// decodeClaimsFast reads the claims of a mandate in the plain shape a Signer writes
// (json.Marshal of Claims), without a JSON decoder and with one allocation for all its
// strings: the payload is turned into one string and every field is a piece of it. It
// accepts only a subset of JSON: one object, no white space, the known members each at
// most once, strings of printable ASCII without escapes, integers of plain decimal
// digits that fit their field, delegation_path as an array of such strings, and act as
// an object of sub and act members (nested at most maxFastActDepth deep). Anything
// else, even valid JSON, is reported false and left to the JSON decoder, so that every
// payload this function accepts decodes to exactly the same claims there
// (FuzzDecodeClaims holds the two to that).
func decodeClaimsFast(payload []byte, c *Claims) bool {
	s := string(payload)
	var seen uint32
	end, ok := plainObject(s, 0, func(key string, i int) (int, bool) {
		var bit uint32
		next, ok := 0, false
		switch key {
		case "iss":
			bit = 1 << 0
			c.Issuer, next, ok = plainString(s, i)
		case "sub":
			bit = 1 << 1
			c.Subject, next, ok = plainString(s, i)
		case "aud":
			bit = 1 << 2
			c.Audience, next, ok = plainString(s, i)
		case "jti":
			bit = 1 << 3
			c.ID, next, ok = plainString(s, i)
		case "zone_id":
			bit = 1 << 4
			c.ZoneID, next, ok = plainString(s, i)
		case "client_id":
			bit = 1 << 5
			c.ClientID, next, ok = plainString(s, i)
		case "sid":
			bit = 1 << 6
			c.SID, next, ok = plainString(s, i)
		case "root_sid":
			bit = 1 << 7
			c.RootSID, next, ok = plainString(s, i)
		case "use":
			bit = 1 << 8
			c.Use, next, ok = plainString(s, i)
		case "scope":
			bit = 1 << 9
			c.Scope, next, ok = plainString(s, i)
		case "delegation_edge_id":
			bit = 1 << 10
			c.DelegationEdgeID, next, ok = plainString(s, i)
		case "exp":
			bit = 1 << 11
			c.Expiry, next, ok = plainInt(s, i, 64)
		case "iat":
			bit = 1 << 12
			c.IssuedAt, next, ok = plainInt(s, i, 64)
		case "nbf":
			bit = 1 << 13
			c.NotBefore, next, ok = plainInt(s, i, 64)
		case "delegation_graph_epoch":
			bit = 1 << 14
			c.DelegationGraphEpoch, next, ok = plainInt(s, i, 64)
		case "hop_count":
			bit = 1 << 15
			var v int64
			v, next, ok = plainInt(s, i, strconv.IntSize)
			c.HopCount = int(v)
		case "delegation_path":
			bit = 1 << 16
			c.DelegationPath, next, ok = plainStrings(s, i)
		case "act":
			bit = 1 << 17
			c.Act, next, ok = plainActor(s, i, 0)
		default:
			return 0, false
		}
		if seen&bit != 0 {
			return 0, false
		}
		seen |= bit
		return next, ok
	})
	return ok && end == len(s)
}

// maxFastActDepth bounds the act nesting decodeClaimsFast reads itself; deeper chains
// go to the JSON decoder.
const maxFastActDepth = 16

// plainActor reads an act object at s[i]: members sub (a plain string) and act (another
// such object), each at most once, in either order.
func plainActor(s string, i, depth int) (*Actor, int, bool) {
	if depth >= maxFastActDepth {
		return nil, 0, false
	}
	a := &Actor{}
	var sawSub, sawAct bool
	end, ok := plainObject(s, i, func(key string, i int) (int, bool) {
		next, ok := 0, false
		switch {
		case key == "sub" && !sawSub:
			sawSub = true
			a.Sub, next, ok = plainString(s, i)
		case key == "act" && !sawAct:
			sawAct = true
			a.Act, next, ok = plainActor(s, i, depth+1)
		}
		return next, ok
	})
	if !ok {
		return nil, 0, false
	}
	return a, end, true
}

// plainObject walks a JSON object at s[i] with no white space and plain member names
// (see plainString): for each member it calls value with the name and the index of the
// value, which reads the value and returns the index after it. It returns the index
// after the closing brace.
func plainObject(s string, i int, value func(key string, i int) (int, bool)) (int, bool) {
	if i+1 >= len(s) || s[i] != '{' {
		return 0, false
	}
	i++
	if s[i] == '}' {
		return i + 1, true
	}
	for {
		key, next, ok := plainString(s, i)
		if !ok || next >= len(s) || s[next] != ':' {
			return 0, false
		}
		if i, ok = value(key, next+1); !ok || i >= len(s) {
			return 0, false
		}
		switch s[i] {
		case ',':
			i++
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
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
// fraction, exponent or leading zero) that fits a signed integer of bits bits.
func plainInt(s string, i, bits int) (int64, int, bool) {
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == i || (s[i] == '0' && j > i+1) {
		return 0, 0, false
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
