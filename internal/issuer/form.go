package issuer

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// maxFormBytes is docs/protocol.md section 2's body limit.
const maxFormBytes = 64 << 10

// formMediaType is the one media type a token or revocation request may carry.
const formMediaType = "application/x-www-form-urlencoded"

// form is a parsed token or revocation request: each parameter at most once, except that
// every `resource` is kept, so that repeats can be answered with invalid_target.
type form struct {
	values    map[string]string
	resources []string
}

func (f *form) get(name string) string { return f.values[name] }

func (f *form) has(name string) bool {
	_, ok := f.values[name]
	return ok
}

// readForm enforces the request shape of docs/protocol.md section 2: POST without a query string,
// application/x-www-form-urlencoded, at most 64 KiB, no repeated parameter.
func readForm(r *http.Request) (*form, *Error) {
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		return nil, badRequest("query string parameters are not accepted; send them in the body")
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil, badRequest("content type must be application/x-www-form-urlencoded")
	}
	// The bare media type, which is what clients send, needs no parsing.
	if ct != formMediaType {
		mediaType, params, err := mime.ParseMediaType(ct)
		if err != nil || mediaType != formMediaType {
			return nil, badRequest("content type must be application/x-www-form-urlencoded")
		}
		// Parameter values such as the charset are case-insensitive (RFC 2045 section 5.1).
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
			return nil, badRequest("charset must be utf-8")
		}
	}
	if r.ContentLength > maxFormBytes {
		return nil, badRequest(fmt.Sprintf("request body exceeds %d bytes", maxFormBytes))
	}
	body, err := readBody(r.Body, r.ContentLength)
	if err != nil {
		return nil, badRequest("reading request body failed")
	}
	if len(body) > maxFormBytes {
		return nil, badRequest(fmt.Sprintf("request body exceeds %d bytes", maxFormBytes))
	}
	f, err := parseForm(body)
	if err != nil {
		return nil, badRequest(err.Error())
	}
	return f, nil
}

// readBody reads at most maxFormBytes+1 bytes of the body. A declared length sizes the buffer
// once, with a spare byte so that the read which meets the end does not grow it.
func readBody(body io.Reader, declared int64) ([]byte, error) {
	size := 512
	if declared >= 0 && declared <= maxFormBytes {
		size = int(declared) + 1
	}
	buf := make([]byte, 0, size)
	lr := io.LimitReader(body, maxFormBytes+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

var errRepeated = errors.New("repeated parameter")

// maxFormParams is the number of parameters url.ParseQuery accepts by default; a body with
// more is refused the same way.
const maxFormParams = 10000

// parseForm decodes a urlencoded body with the rules of url.ParseQuery (a semicolon is not a
// separator, empty pairs are skipped, a pair without "=" has an empty value). A repeated
// parameter other than `resource` is an error; empty values count as present. It reads the body
// in one pass into the form itself, so an unescaped value shares the body's string.
func parseForm(body []byte) (*form, error) {
	query := string(body)
	n := strings.Count(query, "&") + 1
	if n > maxFormParams {
		return nil, errors.New("malformed form body: too many parameters")
	}
	f := &form{values: make(map[string]string, min(n, 16))}
	var repeated *string
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		if strings.Contains(pair, ";") {
			return nil, errors.New("malformed form body: invalid semicolon separator")
		}
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, fmt.Errorf("malformed form body: %w", err)
		}
		v, err = url.QueryUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("malformed form body: %w", err)
		}
		if k == "resource" {
			f.resources = append(f.resources, v)
			if len(f.resources) > 1 {
				continue
			}
		} else if _, dup := f.values[k]; dup {
			// A malformed pair later in the body is still reported first.
			if repeated == nil {
				repeated = &k
			}
			continue
		}
		f.values[k] = v
	}
	if repeated != nil {
		return nil, fmt.Errorf("%w %q", errRepeated, *repeated)
	}
	return f, nil
}
