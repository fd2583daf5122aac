package caddymodules

import (
	"io"
	"net/http"
)

// identityPrefix starts the names of the identity headers the handler sets upstream.
const identityPrefix = "x-caracal-"

// identityName reports whether an upstream could take the field name for one of the
// identity headers: it starts with X-Caracal- in any case, with '_' read as '-' the
// way CGI, WSGI and Rack name request headers (X_Caracal_Sub becomes HTTP_X_CARACAL_SUB).
func identityName(name string) bool {
	if len(name) < len(identityPrefix) {
		return false
	}
	for i := 0; i < len(identityPrefix); i++ {
		c := name[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != identityPrefix[i] {
			return false
		}
	}
	return true
}

// stripIdentity removes every header field of r that identityName reports, and the
// same from its trailer: the declared names now, and the fields that arrive with the
// end of the body before the body reports it (net/http and the HTTP/2 server add them
// to r.Trailer, declared or not, just before the read that ends the body returns, and
// reverse_proxy copies r.Trailer on that same read). Without declared trailers
// r.Trailer is nil and stays so on the request passed on, so nothing that arrives
// later reaches it; that case, the common one, allocates nothing.
func stripIdentity(r *http.Request) {
	for name := range r.Header {
		if identityName(name) {
			delete(r.Header, name)
		}
	}
	if r.Trailer == nil {
		return
	}
	stripTrailer(r.Trailer)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &trailerFilter{ReadCloser: r.Body, trailer: r.Trailer}
	}
}

func stripTrailer(trailer http.Header) {
	for name := range trailer {
		if identityName(name) {
			delete(trailer, name)
		}
	}
}

// trailerFilter strips identity fields from the request trailer whenever a read of the
// body ends with an error, io.EOF included: the trailer is complete by then.
type trailerFilter struct {
	io.ReadCloser
	trailer http.Header
}

func (f *trailerFilter) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err != nil {
		stripTrailer(f.trailer)
	}
	return n, err
}
