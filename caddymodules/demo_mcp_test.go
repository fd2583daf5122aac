package caddymodules

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDemoMCPServer(t *testing.T) {
	h := new(DemoUpstream)
	call := func(method, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(method, "/mcp", strings.NewReader(body))
		if err := h.ServeHTTP(rec, req, nil); err != nil {
			t.Fatal(err)
		}
		return rec
	}
	for _, c := range []struct {
		method, body string
		status       int
		want         string
	}{
		{http.MethodPost, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}`, 200, `"protocolVersion":"2025-11-25"`},
		{http.MethodPost, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"1999-01-01"}}`, 200, `"protocolVersion":"2025-06-18"`},
		{http.MethodPost, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, 202, ""},
		{http.MethodPost, `{"jsonrpc":"2.0","id":"a","method":"tools/list"}`, 200, `"id":"a","jsonrpc":"2.0","result":{"tools":[{"name":"search"`},
		{http.MethodPost, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fetch","arguments":{"id":7}}}`, 200, `document \"7\"`},
		{http.MethodPost, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"nope"}}`, 200, `"code":-32602`},
		{http.MethodPost, `{"jsonrpc":"2.0","id":4,"method":"resources/list"}`, 200, `"code":-32601`},
		{http.MethodPost, `not json`, 200, `{"error":{"code":-32700`},
		{http.MethodGet, ``, 405, ""},
	} {
		rec := call(c.method, c.body)
		if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s %s: %d %s", c.method, c.body, rec.Code, rec.Body)
		}
	}
}
