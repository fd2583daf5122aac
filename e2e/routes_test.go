package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// jsonError sends a request and checks a JSON error answer with the status, the error
// code and, for a 405, the Allow header.
func jsonError(t *testing.T, in *instance, method, path, bearer string, status int, code, allow string) {
	t.Helper()
	req, err := http.NewRequest(method, in.url(path), strings.NewReader(`{"client_id":"slash-agent","name":"Slash"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, body := in.do(t, req)
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil || e.Error != code || e.Description == "" {
		t.Fatalf("%s %s: %d %q %s; want %d JSON with error %q", method, path, resp.StatusCode, resp.Header.Get("Content-Type"), body, status, code)
	}
	if got := resp.Header.Get("Allow"); got != allow {
		t.Fatalf("%s %s: Allow %q, want %q", method, path, got, allow)
	}
}

// The demo answers every path it does not serve with a JSON 404 or 405, never with the
// empty 200 Caddy gives at the end of its routes.
func TestDemoAnswersUnmatchedPathsWith404Or405(t *testing.T) {
	in := start(t, demoCaddyfile(t, freePort(t)))
	const admin = "demo-admin-token-change-me"

	// The demo is up and serves its endpoints, HEAD included.
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, in.url("/zones/demo/jwks.json"), nil)
		if resp, body := in.do(t, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s jwks: %d %s", method, resp.StatusCode, body)
		}
	}

	// The site's fallback.
	jsonError(t, in, http.MethodGet, "/", "", http.StatusNotFound, "not_found", "")
	jsonError(t, in, http.MethodPost, "/nothing/here", "", http.StatusNotFound, "not_found", "")
	// A Host outside the site (the TLS name is the site's): refused, not an empty 200.
	req, _ := http.NewRequest(http.MethodGet, in.url("/"), nil)
	req.Host = "elsewhere.test"
	if resp, body := in.do(t, req); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("a request for another host: %d %q", resp.StatusCode, body)
	}
	// The STS's paths.
	jsonError(t, in, http.MethodGet, "/zones/demo/oauth2/token", "", http.StatusMethodNotAllowed, "invalid_request", "POST")
	jsonError(t, in, http.MethodPost, "/zones/demo/jwks.json", "", http.StatusMethodNotAllowed, "invalid_request", "GET, HEAD")
	jsonError(t, in, http.MethodOptions, "/zones/demo/oauth2/revoke", "", http.StatusMethodNotAllowed, "invalid_request", "POST")
	jsonError(t, in, http.MethodPost, "/zones/demo/oauth2/token/", "", http.StatusNotFound, "not_found", "")
	jsonError(t, in, http.MethodGet, "/zones/demo/unknown", "", http.StatusNotFound, "not_found", "")
	// The Coordinator's.
	jsonError(t, in, http.MethodPost, "/v1/zones/demo/applications/", admin, http.StatusNotFound, "not_found", "")
	jsonError(t, in, http.MethodGet, "/v1/zones/demo/applications", admin, http.StatusMethodNotAllowed, "invalid_request", "POST")
	jsonError(t, in, http.MethodGet, "/v1/nothing", "", http.StatusNotFound, "not_found", "")
	// The application was not created through the trailing-slash path: creating it now
	// is no conflict.
	if status := in.adminCall(t, http.MethodPost, "/v1/zones/demo/applications", admin, map[string]string{"client_id": "slash-agent", "name": "Slash"}, nil); status != http.StatusCreated {
		t.Fatalf("creating the application after the trailing-slash attempt: %d", status)
	}
}

// seen is what the test upstream received: header and trailer, after the whole body.
type seen struct {
	header, trailer http.Header
}

// Spoofed identity headers (any case, '_' for '-') and request trailers of those names,
// declared or not, never reach the upstream behind caracal_mandate and reverse_proxy.
func TestSpoofedIdentityHeadersAndTrailersThroughCaddy(t *testing.T) {
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		got <- seen{r.Header.Clone(), r.Trailer.Clone()}
	}))
	t.Cleanup(up.Close)
	in := startGateway(t, gatewayConfig{serveSTS: true, upstream: up.Listener.Addr().String()})
	base := fmt.Sprintf("https://localhost:%d", in.port)
	_, tok := in.agentMandate(t, base)

	var req strings.Builder
	fmt.Fprintf(&req, "POST /echo/x HTTP/1.1\r\nHost: localhost:%d\r\nAuthorization: Bearer %s\r\n", in.port, tok)
	req.WriteString("X_Caracal_Sub: spoof\r\nx-caracal_zone: spoof\r\nX-CARACAL-SID: spoof\r\n")
	req.WriteString("Trailer: X-Caracal-Sub, X_Caracal_Scope, X-Checksum\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
	req.WriteString("5\r\nhello\r\n0\r\n")
	req.WriteString("X-Caracal-Sub: spoof\r\nX_Caracal_Scope: spoof\r\nX-Caracal-Undeclared: spoof\r\nX-Checksum: abc\r\n\r\n")
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", in.port), in.tlsConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var s seen
	select {
	case s = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream got no request")
	}
	for _, fields := range []http.Header{s.header, s.trailer} {
		for name, v := range fields {
			if strings.Contains(strings.Join(v, ","), "spoof") {
				t.Errorf("upstream saw %s: %q", name, v)
			}
		}
	}
	if s.header.Get("X-Caracal-Sub") != "agent" || s.header.Get("X-Caracal-Zone") != "alpha" {
		t.Errorf("identity headers %v", s.header)
	}
	// Trailers do pass: the innocent one arrived.
	if s.trailer.Get("X-Checksum") != "abc" {
		t.Errorf("upstream trailers %v, want X-Checksum", s.trailer)
	}
}
