package sts

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestClientIPPrefersCaddysClientIP(t *testing.T) {
	r := httptest.NewRequest("POST", "https://sts.test/zones/demo/oauth2/token", nil)
	r.RemoteAddr = "10.0.0.1:5555"
	if got := clientIP(r); got != "10.0.0.1" {
		t.Fatalf("without Caddy's variable: %q, want the RemoteAddr host", got)
	}
	vars := map[string]any{caddyhttp.ClientIPVarKey: "203.0.113.5"}
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
	if got := clientIP(r); got != "203.0.113.5" {
		t.Fatalf("behind a trusted proxy: %q, want Caddy's client IP", got)
	}
	r.RemoteAddr = "no-port"
	vars[caddyhttp.ClientIPVarKey] = ""
	if got := clientIP(r); got != "no-port" {
		t.Fatalf("RemoteAddr without a port: %q", got)
	}
}
