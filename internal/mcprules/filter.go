package mcprules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"unicode/utf8"
)

// DefaultMaxEvent bounds one server-sent event, and a buffered JSON response, when
// the filters are given no bound: 1 MiB.
const DefaultMaxEvent = 1 << 20

var (
	// ErrEventTooLarge is returned once an event outgrows the SSE filter's bound;
	// the stream must then be cut.
	ErrEventTooLarge = errors.New("server-sent event exceeds the filter's bound")
	// ErrResponseTooLarge is returned once a JSON response outgrows the JSON filter's
	// bound.
	ErrResponseTooLarge = errors.New("tools/list response exceeds the filter's bound")
	// ErrUnfilterable wraps the reason a tools/list response could not be read; it is
	// never passed on unfiltered.
	ErrUnfilterable = errors.New("tools/list response cannot be filtered")
)

// FilterToolsList removes from a JSON-RPC tools/list result every tool whose name
// keep refuses, and every entry that is not an object with exactly one string name.
// Kept entries, and everything around the tools array, are copied byte for byte.
// A document that is valid JSON but no tools/list result (an error response, a
// notification) comes back unchanged with changed false; a document that is not
// valid JSON, or repeats result or result.tools, is an error wrapping
// ErrUnfilterable. doc is not modified.
func FilterToolsList(doc []byte, keep func(name string) bool) (out []byte, changed bool, err error) {
	if !utf8.Valid(doc) {
		return nil, false, fmt.Errorf("%w: %v", ErrUnfilterable, errUTF8)
	}
	s := scanner{data: doc, maxDepth: DefaultMaxDepth}
	if s.peek() != '{' {
		if _, _, err := s.skip(); err != nil {
			return nil, false, fmt.Errorf("%w: %v", ErrUnfilterable, err)
		}
		if err := s.end(); err != nil {
			return nil, false, fmt.Errorf("%w: %v", ErrUnfilterable, err)
		}
		return doc, false, nil
	}
	var (
		results, lists int
		open, close    = -1, -1
		kept           []span
		dropped        bool
	)
	err = s.object(func(key span, esc bool) error {
		if !s.keyIs(key, esc, "result") {
			_, _, err := s.skip()
			return err
		}
		if results++; s.peek() != '{' {
			_, _, err := s.skip()
			return err
		}
		return s.object(func(key span, esc bool) error {
			if !s.keyIs(key, esc, "tools") {
				_, _, err := s.skip()
				return err
			}
			if lists++; s.peek() != '[' {
				_, _, err := s.skip()
				return err
			}
			open = s.pos
			kept = kept[:0]
			err := s.array(func() error {
				s.ws()
				start := s.pos
				if s.peek() != '{' {
					_, _, err := s.skip()
					dropped = true
					return err
				}
				names := 0
				var name span
				var nameEsc, isString bool
				err := s.object(func(key span, esc bool) error {
					if !s.keyIs(key, esc, "name") {
						_, _, err := s.skip()
						return err
					}
					names++
					isString = s.peek() == '"'
					if !isString {
						_, _, err := s.skip()
						return err
					}
					var err error
					name, nameEsc, err = s.str()
					return err
				})
				if err != nil {
					return err
				}
				if names == 1 && isString && keep(s.text(name, nameEsc)) {
					kept = append(kept, span{start, s.pos})
				} else {
					dropped = true
				}
				return nil
			})
			close = s.pos - 1
			return err
		})
	})
	if err == nil {
		err = s.end()
	}
	switch {
	case err != nil:
		return nil, false, fmt.Errorf("%w: %v", ErrUnfilterable, err)
	case results > 1 || lists > 1:
		return nil, false, fmt.Errorf("%w: result or result.tools appears more than once", ErrUnfilterable)
	case open < 0 || !dropped:
		return doc, false, nil
	}
	out = make([]byte, 0, len(doc))
	out = append(out, doc[:open+1]...)
	for i, sp := range kept {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, doc[sp.start:sp.end]...)
	}
	out = append(out, doc[close:]...)
	return out, true, nil
}

// flush pushes written bytes on when w can.
func flush(w io.Writer) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// SSEFilter rewrites a text/event-stream response of tools/list as it streams: each
// event is held until the blank line that ends it (at most max bytes), then
// forwarded unchanged, or with its data replaced by the filtered tools/list result
// when it carries one. A comment line between events is forwarded at once, so
// keep-alives are not held. Bytes reach the next writer event by event, so a writer
// that checks revocation every few KiB downstream sees the stream promptly.
type SSEFilter struct {
	w    io.Writer
	keep func(string) bool
	max  int

	buf       []byte
	lineStart int
	skipLF    bool
	atStart   bool
	bomEvent  bool
	err       error
}

// NewSSEFilter returns a filter writing to w; max bounds one event (DefaultMaxEvent
// when zero or less).
func NewSSEFilter(w io.Writer, keep func(name string) bool, max int) *SSEFilter {
	if max <= 0 {
		max = DefaultMaxEvent
	}
	return &SSEFilter{w: w, keep: keep, max: max, atStart: true}
}

// Write consumes p. After the first error (ErrEventTooLarge, ErrUnfilterable, or
// the next writer's) every call fails with it and nothing more is forwarded.
func (f *SSEFilter) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := len(p)
	for len(p) > 0 {
		if f.skipLF {
			f.skipLF = false
			if p[0] == '\n' {
				p = p[1:]
				if len(f.buf) == 0 {
					if err := f.forward([]byte{'\n'}); err != nil {
						return 0, err
					}
				} else {
					f.buf = append(f.buf, '\n')
					f.lineStart++
				}
				continue
			}
		}
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			if len(f.buf)+len(p) > f.max {
				return 0, f.fail(ErrEventTooLarge)
			}
			f.buf = append(f.buf, p...)
			break
		}
		if len(f.buf)+i+2 > f.max {
			return 0, f.fail(ErrEventTooLarge)
		}
		contentEnd := len(f.buf) + i
		f.buf = append(f.buf, p[:i+1]...)
		term := p[i]
		p = p[i+1:]
		if term == '\r' {
			switch {
			case len(p) > 0 && p[0] == '\n':
				f.buf = append(f.buf, '\n')
				p = p[1:]
			case len(p) == 0:
				f.skipLF = true
			}
		}
		if err := f.line(contentEnd); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// line handles the line just completed in buf, whose content ends at contentEnd.
func (f *SSEFilter) line(contentEnd int) error {
	content := f.buf[f.lineStart:contentEnd]
	if f.atStart {
		f.atStart = false
		f.bomEvent = true
		content = bytes.TrimPrefix(content, bom)
	}
	switch {
	case len(content) == 0:
		return f.dispatch()
	case f.lineStart == 0 && content[0] == ':':
		f.bomEvent = false
		return f.forwardBuf()
	}
	f.lineStart = len(f.buf)
	return nil
}

var bom = []byte("\xef\xbb\xbf")

// forwardBuf sends the pending bytes unchanged.
func (f *SSEFilter) forwardBuf() error {
	err := f.forward(f.buf)
	f.buf, f.lineStart = f.buf[:0], 0
	return err
}

func (f *SSEFilter) forward(b []byte) error {
	if _, err := f.w.Write(b); err != nil {
		return f.fail(err)
	}
	flush(f.w)
	return nil
}

func (f *SSEFilter) fail(err error) error {
	f.err = err
	f.buf = nil
	return err
}

// sseLine is one line of a pending event: its bytes with terminator, its content.
type sseLine struct{ raw, content []byte }

func splitLines(b []byte, fn func(sseLine)) {
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			fn(sseLine{b, b})
			return
		}
		end := i + 1
		if b[i] == '\r' && end < len(b) && b[end] == '\n' {
			end++
		}
		fn(sseLine{b[:end], b[:i]})
		b = b[end:]
	}
}

// field splits an SSE line into its field name and value (one leading space of the
// value dropped).
func field(content []byte) (name, value []byte) {
	i := bytes.IndexByte(content, ':')
	if i < 0 {
		return content, nil
	}
	value = content[i+1:]
	if len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	return content[:i], value
}

// dispatch handles a complete event (its blank line included in buf).
func (f *SSEFilter) dispatch() error {
	var data []byte
	lines := 0
	bomFirst := f.bomEvent
	first := bomFirst
	splitLines(f.buf, func(l sseLine) {
		c := l.content
		if first {
			c, first = bytes.TrimPrefix(c, bom), false
		}
		if name, value := field(c); string(name) == "data" {
			if lines > 0 {
				data = append(data, '\n')
			}
			data = append(data, value...)
			lines++
		}
	})
	f.bomEvent = false
	if lines == 0 {
		return f.forwardBuf()
	}
	out, changed, err := FilterToolsList(data, f.keep)
	if err != nil {
		return f.fail(err)
	}
	if !changed {
		return f.forwardBuf()
	}
	var ev []byte
	wrote, idx := false, 0
	splitLines(f.buf, func(l sseLine) {
		raw, c := l.raw, l.content
		if idx == 0 && bomFirst && bytes.HasPrefix(c, bom) {
			ev = append(ev, bom...)
			raw, c = raw[len(bom):], c[len(bom):]
		}
		idx++
		if name, _ := field(c); len(c) == 0 || string(name) != "data" {
			ev = append(ev, raw...)
			return
		}
		if wrote {
			return
		}
		wrote = true
		splitLines(out, func(seg sseLine) {
			ev = append(ev, "data: "...)
			ev = append(ev, seg.content...)
			ev = append(ev, '\n')
		})
	})
	f.buf, f.lineStart = f.buf[:0], 0
	return f.forward(ev)
}

// Close ends the stream. An event left without its blank line is dropped, as an
// event-stream reader drops it at the end of the stream.
func (f *SSEFilter) Close() error {
	if f.err != nil {
		return f.err
	}
	f.buf = nil
	return nil
}

// JSONFilter buffers an application/json tools/list response, at most max bytes,
// and writes it filtered on Close.
type JSONFilter struct {
	w    io.Writer
	keep func(string) bool
	max  int
	buf  []byte
	err  error
}

// NewJSONFilter returns a filter writing to w; max bounds the response
// (DefaultMaxEvent when zero or less).
func NewJSONFilter(w io.Writer, keep func(name string) bool, max int) *JSONFilter {
	if max <= 0 {
		max = DefaultMaxEvent
	}
	return &JSONFilter{w: w, keep: keep, max: max}
}

// Write buffers p; past the bound it fails with ErrResponseTooLarge.
func (f *JSONFilter) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if len(f.buf)+len(p) > f.max {
		f.err, f.buf = ErrResponseTooLarge, nil
		return 0, f.err
	}
	f.buf = append(f.buf, p...)
	return len(p), nil
}

// Close filters the buffered response and writes it on.
func (f *JSONFilter) Close() error {
	if f.err != nil {
		return f.err
	}
	out, _, err := FilterToolsList(f.buf, f.keep)
	f.buf = nil
	if err != nil {
		f.err = err
		return err
	}
	_, err = f.w.Write(out)
	f.err = errors.New("mcprules: JSONFilter is closed")
	return err
}
