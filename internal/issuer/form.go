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
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil || mediaType != "application/x-www-form-urlencoded" {
		return nil, badRequest("content type must be application/x-www-form-urlencoded")
	}
	// Parameter values such as the charset are case-insensitive (RFC 2045 section 5.1).
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return nil, badRequest("charset must be utf-8")
	}
	if r.ContentLength > maxFormBytes {
		return nil, badRequest(fmt.Sprintf("request body exceeds %d bytes", maxFormBytes))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBytes+1))
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

var errRepeated = errors.New("repeated parameter")

// parseForm decodes a urlencoded body. A repeated parameter other than `resource` is an
// error; empty values count as present.
func parseForm(body []byte) (*form, error) {
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("malformed form body: %w", err)
	}
	f := &form{values: make(map[string]string, len(vals))}
	for k, v := range vals {
		if k == "resource" {
			f.resources = v
		} else if len(v) > 1 {
			return nil, fmt.Errorf("%w %q", errRepeated, k)
		}
		f.values[k] = v[0]
	}
	return f, nil
}
