package mcprules

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DefaultMaxBody is the request body bound when Parser.MaxBody is zero: 1 MiB.
const DefaultMaxBody = 1 << 20

// DefaultMaxDepth is the JSON nesting bound when Parser.MaxDepth is zero.
const DefaultMaxDepth = 64

// Request metadata headers of the 2026-07-28 Streamable HTTP revision.
const (
	HeaderMethod = "Mcp-Method"
	HeaderName   = "Mcp-Name"
)

// JSON-RPC error codes used in refusals. CodeHeaderMismatch is the MCP code for a
// request whose metadata headers disagree with its body; CodeInsufficientScope is
// Caracal's own, chosen outside the range JSON-RPC reserves (-32768 to -32000) as
// the MCP specification asks of codes it does not define.
const (
	CodeParseError        = -32700
	CodeInvalidRequest    = -32600
	CodeInvalidParams     = -32602
	CodeHeaderMismatch    = -32020
	CodeInsufficientScope = -31403
)

// Kind says which JSON-RPC message a body holds.
type Kind uint8

// The three message kinds a client may post.
const (
	// KindRequest has a method and an id and expects a response.
	KindRequest Kind = iota + 1
	// KindNotification has a method and no id.
	KindNotification
	// KindResponse has a result or an error and no method: a client answering a
	// server's request (protocol revisions before 2026-07-28).
	KindResponse
)

// String names the kind for logs and metrics.
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	}
	return "invalid"
}

// Message is what authorization needs from one JSON-RPC message. It never holds
// the call's arguments.
type Message struct {
	// Kind is the message kind.
	Kind Kind
	// Method is the JSON-RPC method; empty for a response.
	Method string
	// Name is the tool or prompt name (params.name of tools/call and prompts/get) or
	// the resource URI (params.uri of resources/read, resources/subscribe and
	// resources/unsubscribe); empty for other methods.
	Name string
	// ID is the raw JSON id (a string or an integer; null only in an error
	// response), nil for a notification. It aliases the parsed body.
	ID []byte

	// altName and altURI are params.name and params.uri of any method, kept to check
	// an Mcp-Name header sent with a method this package does not know.
	altName, altURI    string
	hasAltName, hasURI bool
}

// nameField says which member of params carries the name the Mcp-Name header
// mirrors: "name", "uri", or "" when the method carries none.
func nameField(method string) string {
	switch method {
	case "tools/call", "prompts/get":
		return "name"
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		return "uri"
	}
	return ""
}

// nameRequired reports whether a 2026-07-28 client must send Mcp-Name with method.
func nameRequired(method string) bool {
	switch method {
	case "tools/call", "prompts/get", "resources/read":
		return true
	}
	return false
}

// Error is a refusal of a request before any rule is applied, shaped as a JSON-RPC
// error response. Its message names what is wrong and never echoes the body.
type Error struct {
	// Status is the HTTP status to answer with.
	Status int
	// Code is the JSON-RPC error code.
	Code int
	// Message is the JSON-RPC error message.
	Message string
	// ID is the raw JSON id of the refused request, nil when it could not be read.
	ID []byte
	// Data is the error's data member as JSON, nil for none.
	Data []byte
}

// Error returns the JSON-RPC error message.
func (e *Error) Error() string { return e.Message }

// Body returns the JSON-RPC error response for e (id null when it is unknown).
func (e *Error) Body() []byte {
	msg, _ := json.Marshal(e.Message)
	b := make([]byte, 0, 64+len(msg)+len(e.ID)+len(e.Data))
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	if e.ID == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, e.ID...)
	}
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(e.Code), 10)
	b = append(b, `,"message":`...)
	b = append(b, msg...)
	if e.Data != nil {
		b = append(b, `,"data":`...)
		b = append(b, e.Data...)
	}
	return append(b, "}}"...)
}

// ErrBodyTooLarge is wrapped by the Error ReadBody returns past the bound.
var ErrBodyTooLarge = errors.New("request body too large")

// Parser reads and classifies MCP requests posted over Streamable HTTP.
type Parser struct {
	// MaxBody bounds the request body in bytes (default DefaultMaxBody).
	MaxBody int64
	// MaxDepth bounds JSON nesting (default DefaultMaxDepth).
	MaxDepth int
}

func (p Parser) maxBody() int64 {
	if p.MaxBody > 0 {
		return p.MaxBody
	}
	return DefaultMaxBody
}

func (p Parser) maxDepth() int {
	if p.MaxDepth > 0 {
		return p.MaxDepth
	}
	return DefaultMaxDepth
}

// ReadBody reads the whole body, at most MaxBody bytes, in one buffer sized from
// contentLength when it is known (pass -1 otherwise). A longer body is an Error
// with status 413 and no more than MaxBody+1 bytes are read.
func (p Parser) ReadBody(r io.Reader, contentLength int64) ([]byte, error) {
	limit := p.maxBody()
	if contentLength > limit {
		return nil, tooLarge(limit)
	}
	size := min(512, limit+1)
	if contentLength >= 0 {
		size = contentLength + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			next := min(2*int64(cap(buf)), limit+1)
			if next <= int64(cap(buf)) {
				next = int64(cap(buf)) + 1
			}
			grown := make([]byte, len(buf), next)
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, tooLarge(limit)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func tooLarge(limit int64) *Error {
	return &Error{
		Status:  http.StatusRequestEntityTooLarge,
		Code:    CodeInvalidRequest,
		Message: fmt.Sprintf("%v: the limit is %d bytes", ErrBodyTooLarge, limit),
	}
}

// Parse checks the Content-Type, classifies body and checks the Mcp-Method and
// Mcp-Name headers against it. Every failure is an *Error.
func (p Parser) Parse(h http.Header, body []byte) (Message, error) {
	if err := CheckContentType(h); err != nil {
		return Message{}, err
	}
	m, err := p.ParseBody(body)
	if err != nil {
		return m, err
	}
	if err := checkHeaders(h, &m); err != nil {
		return m, err
	}
	return m, nil
}

// CheckContentType refuses, with status 415, a request that is not
// application/json; Parse checks it too, and calling it before ReadBody spares
// reading such a body.
func CheckContentType(h http.Header) error {
	if !isJSON(h.Get("Content-Type")) {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: CodeInvalidRequest,
			Message: "MCP messages are posted as application/json"}
	}
	return nil
}

func isJSON(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "application/json")
}

// ParseBody classifies one JSON-RPC message. The whole body is validated (grammar,
// UTF-8, nesting) so that every later reader sees the same document; members this
// package reads must not repeat, since parsers disagree on which copy wins.
func (p Parser) ParseBody(body []byte) (Message, error) {
	var m Message
	if !utf8.Valid(body) {
		return m, parseError(errUTF8)
	}
	s := scanner{data: body, maxDepth: p.maxDepth()}
	switch s.peek() {
	case '{':
	case '[':
		if err := s.array(func() error { _, _, err := s.skip(); return err }); err != nil {
			return m, parseError(err)
		}
		if err := s.end(); err != nil {
			return m, parseError(err)
		}
		return m, invalid(nil, "JSON-RPC batches are not accepted")
	default:
		if _, _, err := s.skip(); err != nil {
			return m, parseError(err)
		}
		if err := s.end(); err != nil {
			return m, parseError(err)
		}
		return m, invalid(nil, "the body is not a JSON-RPC message object")
	}

	var (
		seen                       uint8
		version, method            span
		versionEsc, methodEsc      bool
		versionKind, methodKind    valueKind
		idSpan                     span
		idKind                     valueKind
		hasID, hasResult, hasError bool
		hasParams                  bool
		paramsKind                 valueKind
		nameSp, uriSp              span
		nameEsc, uriEsc            bool
		nameKind, uriKind          valueKind
		dupParam                   bool
	)
	const (
		fVersion = 1 << iota
		fMethod
		fID
		fParams
		fResult
		fError
	)
	dup := false
	mark := func(f uint8) {
		if seen&f != 0 {
			dup = true
		}
		seen |= f
	}
	err := s.object(func(key span, esc bool) error {
		var err error
		switch {
		case s.keyIs(key, esc, "jsonrpc"):
			mark(fVersion)
			if s.peek() == '"' {
				version, versionEsc, err = s.str()
				versionKind = kindString
				return err
			}
			_, versionKind, err = s.skip()
		case s.keyIs(key, esc, "method"):
			mark(fMethod)
			if s.peek() == '"' {
				method, methodEsc, err = s.str()
				methodKind = kindString
				return err
			}
			_, methodKind, err = s.skip()
		case s.keyIs(key, esc, "id"):
			mark(fID)
			hasID = true
			idSpan, idKind, err = s.skip()
		case s.keyIs(key, esc, "result"):
			mark(fResult)
			hasResult = true
			_, _, err = s.skip()
		case s.keyIs(key, esc, "error"):
			mark(fError)
			hasError = true
			_, _, err = s.skip()
		case s.keyIs(key, esc, "params"):
			mark(fParams)
			hasParams = true
			if s.peek() != '{' {
				_, paramsKind, err = s.skip()
				return err
			}
			paramsKind = kindObject
			var pseen uint8
			err = s.object(func(k span, kesc bool) error {
				var err error
				switch {
				case s.keyIs(k, kesc, "name"):
					dupParam = dupParam || pseen&1 != 0
					pseen |= 1
					if s.peek() == '"' {
						nameSp, nameEsc, err = s.str()
						nameKind = kindString
						return err
					}
					_, nameKind, err = s.skip()
				case s.keyIs(k, kesc, "uri"):
					dupParam = dupParam || pseen&2 != 0
					pseen |= 2
					if s.peek() == '"' {
						uriSp, uriEsc, err = s.str()
						uriKind = kindString
						return err
					}
					_, uriKind, err = s.skip()
				default:
					_, _, err = s.skip()
				}
				return err
			})
		default:
			_, _, err = s.skip()
		}
		return err
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return m, parseError(err)
	}

	// The id is echoed in refusals only when it is a valid request id.
	if hasID && (idKind == kindString || idKind == kindInteger) {
		m.ID = body[idSpan.start:idSpan.end]
	}
	switch {
	case dup:
		return m, invalid(m.ID, "a JSON-RPC member appears more than once")
	case dupParam:
		return m, invalid(m.ID, "params.name or params.uri appears more than once")
	case versionKind != kindString || !s.keyIs(version, versionEsc, "2.0"):
		return m, invalid(m.ID, `the jsonrpc member must be "2.0"`)
	}

	switch {
	case seen&fMethod != 0:
		if methodKind != kindString {
			return m, invalid(m.ID, "method must be a string")
		}
		if hasResult || hasError {
			return m, invalid(m.ID, "a message cannot carry both a method and a result or error")
		}
		if hasParams && paramsKind != kindObject && paramsKind != kindArray {
			return m, invalid(m.ID, "params must be an object or an array")
		}
		m.Method = s.method(method, methodEsc)
		m.Kind = KindNotification
		if hasID {
			if idKind != kindString && idKind != kindInteger {
				return m, invalid(nil, "a request id must be a string or an integer")
			}
			m.Kind = KindRequest
		}
	case hasResult != hasError:
		if hasID && idKind != kindString && idKind != kindInteger && !(idKind == kindNull && hasError) {
			return m, invalid(nil, "a response id must be a string or an integer")
		}
		if !hasID {
			return m, invalid(nil, "a response must carry an id")
		}
		m.Kind = KindResponse
		return m, nil
	default:
		return m, invalid(m.ID, "the body is neither a request, a notification nor a response")
	}

	if nameKind == kindString {
		m.hasAltName = true
		m.altName = s.text(nameSp, nameEsc)
	}
	if uriKind == kindString {
		m.hasURI = true
		m.altURI = s.text(uriSp, uriEsc)
	}
	switch nameField(m.Method) {
	case "name":
		if !m.hasAltName {
			return m, &Error{Status: http.StatusBadRequest, Code: CodeInvalidParams, ID: m.ID,
				Message: m.Method + " needs params.name as a string"}
		}
		m.Name = m.altName
	case "uri":
		if !m.hasURI {
			return m, &Error{Status: http.StatusBadRequest, Code: CodeInvalidParams, ID: m.ID,
				Message: m.Method + " needs params.uri as a string"}
		}
		m.Name = m.altURI
	}
	return m, nil
}

// knownMethods interns the methods of the MCP core so that parsing them allocates
// nothing.
var knownMethods = func() map[string]string {
	out := make(map[string]string)
	for _, m := range []string{
		"initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get",
		"resources/list", "resources/read", "resources/templates/list", "resources/subscribe",
		"resources/unsubscribe", "completion/complete", "logging/setLevel", "subscriptions/listen",
		"notifications/initialized", "notifications/cancelled", "notifications/progress",
		"notifications/roots/list_changed",
	} {
		out[m] = m
	}
	return out
}()

// method returns the method at sp, interned when it is a known one.
func (s *scanner) method(sp span, escaped bool) string {
	if !escaped {
		if m, ok := knownMethods[string(s.data[sp.start:sp.end])]; ok {
			return m
		}
	}
	return s.text(sp, escaped)
}

func parseError(err error) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeParseError, Message: "parse error: " + err.Error()}
}

func invalid(id []byte, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidRequest, ID: id, Message: "invalid request: " + msg}
}

func mismatch(id []byte, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeHeaderMismatch, ID: id, Message: "header mismatch: " + msg}
}

// checkHeaders applies the 2026-07-28 request metadata rules: without Mcp-Method and
// Mcp-Name the body alone speaks (earlier revisions); otherwise Mcp-Method must equal
// the body's method and Mcp-Name, required for tools/call, resources/read and
// prompts/get, must equal the name or URI the body carries, after Base64 decoding.
// Header values are compared case-sensitively, optional white space trimmed.
func checkHeaders(h http.Header, m *Message) error {
	methods, names := h.Values(HeaderMethod), h.Values(HeaderName)
	if len(methods) == 0 && len(names) == 0 {
		return nil
	}
	if len(methods) > 1 || len(names) > 1 {
		return mismatch(m.ID, "Mcp-Method and Mcp-Name may appear once each")
	}
	if len(methods) == 0 {
		return mismatch(m.ID, "Mcp-Name is sent without Mcp-Method")
	}
	hm, ok := headerValue(methods[0], false)
	if !ok {
		return mismatch(m.ID, "Mcp-Method holds characters a header value cannot carry")
	}
	if m.Kind == KindResponse {
		return mismatch(m.ID, "Mcp-Method is sent with a response")
	}
	if hm != m.Method {
		return mismatch(m.ID, "Mcp-Method does not match the body's method")
	}
	if len(names) == 0 {
		if nameRequired(m.Method) {
			return mismatch(m.ID, "Mcp-Name is required with "+m.Method)
		}
		return nil
	}
	hn, ok := headerValue(names[0], true)
	if !ok {
		return mismatch(m.ID, "Mcp-Name is not a valid header value")
	}
	var body string
	switch {
	case nameField(m.Method) != "":
		body, ok = m.Name, true
	case m.hasAltName:
		body, ok = m.altName, true
	case m.hasURI:
		body, ok = m.altURI, true
	}
	if !ok {
		return mismatch(m.ID, "Mcp-Name is sent but the body carries no name")
	}
	if hn != body {
		return mismatch(m.ID, "Mcp-Name does not match the body's name")
	}
	return nil
}

// headerValue trims optional white space, checks the value holds only visible
// ASCII, space and tab, and decodes the =?base64?…?= form when sentinel is set.
func headerValue(v string, sentinel bool) (string, bool) {
	v = strings.Trim(v, " \t")
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return "", false
		}
	}
	if !sentinel || !strings.HasPrefix(v, "=?base64?") || !strings.HasSuffix(v, "?=") || len(v) < len("=?base64??=") {
		return v, true
	}
	dec, err := base64.StdEncoding.DecodeString(v[len("=?base64?") : len(v)-len("?=")])
	if err != nil || !utf8.Valid(dec) {
		return "", false
	}
	return string(dec), true
}

// Replay puts body, read by ReadBody, back on r so that the next handler (Caddy's
// reverse_proxy) sends it on byte for byte without another copy: r.Body and
// r.GetBody read the same buffer, and the length becomes known (a chunked request
// goes upstream with a Content-Length).
func Replay(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
}
