package mcprules

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// The scanner walks a JSON document held in memory without building values: it
// validates the whole text (RFC 8259 grammar, UTF-8, escapes, a nesting bound) and
// hands back byte spans of the members the caller asks for. Strings are decoded
// only when their raw bytes hold an escape.

var (
	errSyntax    = errors.New("malformed JSON")
	errDepth     = errors.New("JSON nested too deeply")
	errSurrogate = errors.New("JSON string holds an unpaired UTF-16 surrogate escape")
	errUTF8      = errors.New("body is not valid UTF-8")
)

// span is a half-open byte range of the document.
type span struct{ start, end int }

type scanner struct {
	data     []byte
	pos      int
	depth    int
	maxDepth int
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.pos >= len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return errSyntax
	}
	s.pos++
	return nil
}

// str scans a string starting at the opening quote and returns the span of its raw
// contents (quotes excluded) and whether it holds an escape.
func (s *scanner) str() (span, bool, error) {
	if s.peek() != '"' {
		return span{}, false, errSyntax
	}
	s.pos++
	start := s.pos
	escaped := false
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			sp := span{start, s.pos}
			s.pos++
			return sp, escaped, nil
		case c == '\\':
			escaped = true
			if s.pos+1 >= len(s.data) {
				return span{}, false, errSyntax
			}
			switch s.data[s.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos += 2
			case 'u':
				r, ok := hex4(s.data, s.pos+2)
				if !ok {
					return span{}, false, errSyntax
				}
				s.pos += 6
				switch {
				case r >= 0xD800 && r < 0xDC00:
					// A high surrogate must be followed by an escaped low one.
					if s.pos+1 >= len(s.data) || s.data[s.pos] != '\\' || s.data[s.pos+1] != 'u' {
						return span{}, false, errSurrogate
					}
					lo, ok := hex4(s.data, s.pos+2)
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return span{}, false, errSurrogate
					}
					s.pos += 6
				case r >= 0xDC00 && r <= 0xDFFF:
					return span{}, false, errSurrogate
				}
			default:
				return span{}, false, errSyntax
			}
		case c < 0x20:
			return span{}, false, errSyntax
		default:
			s.pos++
		}
	}
	return span{}, false, errSyntax
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number scans a JSON number and reports whether it is an integer (no fraction, no
// exponent).
func (s *scanner) number() (bool, error) {
	i := s.pos
	d := s.data
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return false, errSyntax
	}
	integer := true
	if i < len(d) && d[i] == '.' {
		integer = false
		i++
		n := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == n {
			return false, errSyntax
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		integer = false
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		n := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == n {
			return false, errSyntax
		}
	}
	s.pos = i
	return integer, nil
}

func (s *scanner) literal(word string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(word)) {
		return errSyntax
	}
	s.pos += len(word)
	return nil
}

// valueKind classifies a JSON value by its first byte.
type valueKind uint8

const (
	kindInvalid valueKind = iota
	kindString
	kindInteger
	kindNumber
	kindObject
	kindArray
	kindBool
	kindNull
)

// skip scans any value and returns its span and kind.
func (s *scanner) skip() (span, valueKind, error) {
	c := s.peek()
	start := s.pos
	switch {
	case c == '"':
		if _, _, err := s.str(); err != nil {
			return span{}, kindInvalid, err
		}
		return span{start, s.pos}, kindString, nil
	case c == '{':
		err := s.object(func(span, bool) error { _, _, err := s.skip(); return err })
		return span{start, s.pos}, kindObject, err
	case c == '[':
		err := s.array(func() error { _, _, err := s.skip(); return err })
		return span{start, s.pos}, kindArray, err
	case c == 't':
		return span{start, start + 4}, kindBool, s.literal("true")
	case c == 'f':
		return span{start, start + 5}, kindBool, s.literal("false")
	case c == 'n':
		return span{start, start + 4}, kindNull, s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		integer, err := s.number()
		if integer {
			return span{start, s.pos}, kindInteger, err
		}
		return span{start, s.pos}, kindNumber, err
	}
	return span{}, kindInvalid, errSyntax
}

// object scans an object; member is called with the raw span of each key (and
// whether it holds escapes) with the scanner positioned before the member's value,
// and must consume that value.
func (s *scanner) object(member func(key span, escaped bool) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.depth++; s.depth > s.maxDepth {
		return errDepth
	}
	defer func() { s.depth-- }()
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		key, esc, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key, esc); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return errSyntax
		}
	}
}

// array scans an array; elem is called before each element and must consume it.
func (s *scanner) array(elem func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.depth++; s.depth > s.maxDepth {
		return errDepth
	}
	defer func() { s.depth-- }()
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return errSyntax
		}
	}
}

// end checks that only white space follows the top-level value.
func (s *scanner) end() error {
	s.ws()
	if s.pos != len(s.data) {
		return errSyntax
	}
	return nil
}

// keyIs reports whether the key at sp, decoded, equals want.
func (s *scanner) keyIs(sp span, escaped bool, want string) bool {
	raw := s.data[sp.start:sp.end]
	if !escaped {
		return string(raw) == want
	}
	if len(raw) < len(want) {
		return false
	}
	var buf [64]byte
	dec, ok := unescape(buf[:0], raw)
	return ok && string(dec) == want
}

// text returns the decoded string at sp.
func (s *scanner) text(sp span, escaped bool) string {
	raw := s.data[sp.start:sp.end]
	if !escaped {
		return string(raw)
	}
	dec, _ := unescape(make([]byte, 0, len(raw)), raw)
	return string(dec)
}

// unescape appends the decoded form of a string body already validated by str.
func unescape(dst, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return dst, false
		}
		switch raw[i+1] {
		case '"', '\\', '/':
			dst = append(dst, raw[i+1])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(raw, i+2)
			if !ok {
				return dst, false
			}
			i += 6
			if r >= 0xD800 && r < 0xDC00 {
				lo, ok := hex4(raw, i+2)
				if !ok {
					return dst, false
				}
				r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, false
		}
		i += 2
	}
	return dst, true
}
