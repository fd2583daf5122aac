package caddymodules

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkHandler is the gateway's own cost per request with a warm verification cache:
// ServeHTTP around a next handler that writes a small response, with and without a
// Content-Length (a response without one is treated as a stream and watched), against
// the next handler called directly.
func BenchmarkHandler(b *testing.B) {
	f := newFixture(b)
	h := f.newHandler(b, &Handler{Scopes: []string{"read"}})
	h.logger = caddy.Log()
	token, _ := f.token(b, nil)
	body := []byte("hello")
	for _, sized := range []bool{true, false} {
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
			if sized {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			}
			_, err := w.Write(body)
			return err
		})
		name := "sized"
		if !sized {
			name = "unsized"
		}
		run := func(b *testing.B, serve func(w http.ResponseWriter, r *http.Request) error) {
			repl := caddy.NewReplacer()
			req := httptest.NewRequest(http.MethodGet, "https://api.test/x", nil)
			req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
			b.ReportAllocs()
			for b.Loop() {
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				if err := serve(rec, req); err != nil || rec.Code != http.StatusOK {
					b.Fatal(rec.Code, err)
				}
			}
		}
		b.Run("direct/"+name, func(b *testing.B) { run(b, next.ServeHTTP) })
		b.Run("caracal_mandate/"+name, func(b *testing.B) {
			run(b, func(w http.ResponseWriter, r *http.Request) error { return h.ServeHTTP(w, r, next) })
		})
	}
}
