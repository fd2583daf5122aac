package caddymodules

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/internal/mcprules"
	"github.com/caracalgw/caracal/mandate"
)

// BenchmarkMCPToolsCall is a tools/call (with Mcp-Method and Mcp-Name) through
// ServeHTTP with a warm verification cache, on the same route with and without an mcp
// block; the next handler reads the body, as reverse_proxy does, and writes a small
// sized answer. The difference between the rows is the per-request cost of reading,
// parsing, deciding and replaying the body.
func BenchmarkMCPToolsCall(b *testing.B) {
	f := newFixture(b)
	body := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"query":"caracal gateway","limit":10}}}`)
	answer := []byte(`{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}]}}`)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return err
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, err := w.Write(answer)
		return err
	})
	rules := &MCPConfig{Spec: mcprules.Spec{
		Tools:   []mcprules.Rule{{Match: "search", Scopes: []string{"tool:search"}}, {Match: "fetch", Scopes: []string{"tool:fetch"}}},
		Methods: []mcprules.Rule{{Match: "tools/list", Scopes: []string{"allow"}}},
	}}
	token, _ := f.token(b, func(c *mandate.Claims) { c.Scope = "tool:search" })
	for _, row := range []struct {
		name string
		mcp  *MCPConfig
	}{{"without-mcp", nil}, {"with-mcp", rules}} {
		h := f.newHandler(b, &Handler{MCP: row.mcp})
		h.logger = caddy.Log()
		b.Run(row.name, func(b *testing.B) {
			repl := caddy.NewReplacer()
			rd := bytes.NewReader(body)
			req := httptest.NewRequest(http.MethodPost, "https://api.test/mcp", nil)
			req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				req.Body, req.ContentLength = io.NopCloser(rd), int64(len(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(mcprules.HeaderMethod, "tools/call")
				req.Header.Set(mcprules.HeaderName, "search")
				rec := httptest.NewRecorder()
				if err := h.ServeHTTP(rec, req, next); err != nil || rec.Code != http.StatusOK {
					b.Fatal(rec.Code, err, rec.Body.String())
				}
			}
		})
	}
}
