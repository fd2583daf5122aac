// Package httproute is the router of Caracal's own endpoints (the STS and the
// Coordinator): method-and-path routes on http.ServeMux, where a known path with a
// wrong method is answered 405 with Allow and any other path 404, so that nothing under
// a prefix Caracal owns ever falls through to the next handler.
package httproute

import (
	"net/http"
	"strings"
)

// Route is one endpoint.
type Route struct {
	Method  string
	Pattern string // a ServeMux pattern without method, e.g. "/v1/zones/{zone}/epoch"
	Handler http.HandlerFunc
}

// Router serves a table of routes.
type Router struct {
	routes, paths *http.ServeMux
	notFound      func(http.ResponseWriter)
}

// New builds the router of table. wrongMethod writes the 405 body for a known path (the
// Allow header is already set; allow lists the methods); notFound writes the 404.
func New(table []Route, wrongMethod func(w http.ResponseWriter, allow string), notFound func(http.ResponseWriter)) *Router {
	rt := &Router{routes: http.NewServeMux(), paths: http.NewServeMux(), notFound: notFound}
	allowed := make(map[string][]string)
	var order []string
	for _, r := range table {
		rt.routes.HandleFunc(r.Method+" "+r.Pattern, r.Handler)
		if _, ok := allowed[r.Pattern]; !ok {
			order = append(order, r.Pattern)
		}
		allowed[r.Pattern] = append(allowed[r.Pattern], r.Method)
		if r.Method == http.MethodGet {
			// A GET pattern of ServeMux serves HEAD too.
			allowed[r.Pattern] = append(allowed[r.Pattern], http.MethodHead)
		}
	}
	for _, p := range order {
		allow := strings.Join(allowed[p], ", ")
		rt.paths.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", allow)
			wrongMethod(w, allow)
		})
	}
	return rt
}

// ServeHTTP serves a route, or answers 405 or 404.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := rt.routes.Handler(r); pattern != "" {
		rt.routes.ServeHTTP(w, r)
		return
	}
	if _, pattern := rt.paths.Handler(r); pattern != "" {
		rt.paths.ServeHTTP(w, r)
		return
	}
	rt.notFound(w)
}

// Under reports whether path is prefix itself or below it ("/v1" and "/v1/…", not
// "/v1x").
func Under(path, prefix string) bool {
	return strings.HasPrefix(path, prefix) && (len(path) == len(prefix) || path[len(prefix)] == '/')
}
