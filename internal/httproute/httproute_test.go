package httproute

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRouterAnswersRoutesWrongMethodsAndUnknownPaths(t *testing.T) {
	ok := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) }
	}
	rt := New([]Route{
		{Method: http.MethodGet, Pattern: "/v1/things/{id}", Handler: ok("get")},
		{Method: http.MethodPost, Pattern: "/v1/things/{id}", Handler: ok("post")},
		{Method: http.MethodPost, Pattern: "/v1/other", Handler: ok("other")},
	},
		func(w http.ResponseWriter, allow string) {
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = w.Write([]byte("405 " + allow))
		},
		func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound); _, _ = w.Write([]byte("404")) })
	cases := []struct {
		method, path string
		status       int
		body, allow  string
	}{
		{http.MethodGet, "/v1/things/a", 200, "get", ""},
		{http.MethodHead, "/v1/things/a", 200, "get", ""}, // the server, not the router, drops a HEAD body
		{http.MethodPost, "/v1/things/a", 200, "post", ""},
		{http.MethodDelete, "/v1/things/a", 405, "405 GET, HEAD, POST", "GET, HEAD, POST"},
		{http.MethodGet, "/v1/other", 405, "405 POST", "POST"},
		{http.MethodOptions, "/v1/other", 405, "405 POST", "POST"},
		{http.MethodGet, "/v1/things/a/", 404, "404", ""},
		{http.MethodPost, "/v1/nothing", 404, "404", ""},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		rt.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || rec.Body.String() != c.body || rec.Header().Get("Allow") != c.allow {
			t.Errorf("%s %s: %d %q Allow %q; want %d %q Allow %q", c.method, c.path, rec.Code, rec.Body, rec.Header().Get("Allow"), c.status, c.body, c.allow)
		}
	}
}

func TestUnder(t *testing.T) {
	for path, want := range map[string]bool{"/v1": true, "/v1/": true, "/v1/x": true, "/v1x": false, "/v": false, "/": false} {
		if got := Under(path, "/v1"); got != want {
			t.Errorf("Under(%q, /v1) = %v", path, got)
		}
	}
}
