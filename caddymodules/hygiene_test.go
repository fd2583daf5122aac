package caddymodules

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func TestIdentityName(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Caracal-Sub":   true,
		"x-caracal-sub":   true,
		"X_Caracal_Sub":   true,
		"x-caracal_sub":   true,
		"X_CARACAL-ZONE":  true,
		"x_caracal_":      true,
		"X-Caracal-":      true,
		"X-Caracal":       false,
		"X-Caracalx-Sub":  false,
		"X--Caracal-Sub":  false,
		"Xcaracal-Sub":    false,
		"Y-Caracal-Sub":   false,
		"X-Caracal.Sub":   false,
		"Authorization":   false,
		"":                false,
		"X-Forwarded-For": false,
	} {
		if got := identityName(name); got != want {
			t.Errorf("identityName(%q) = %v, want %v", name, got, want)
		}
	}
}

// observation is what the test upstream saw of a request: every header and trailer
// name with its values, after reading the whole body.
type observation struct {
	Header  http.Header
	Trailer http.Header
	Body    string
}

// proxied runs h in front of Caddy's reverse_proxy to a test upstream that reports what
// it received, and returns the front server with the channel of observations.
func proxied(t *testing.T, h *Handler, h2 bool) (*httptest.Server, *http.Client, <-chan observation) {
	t.Helper()
	seen := make(chan observation, 4)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		seen <- observation{Header: r.Header.Clone(), Trailer: r.Trailer.Clone(), Body: string(body)}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(upstream.Close)
	// reverse_proxy provisions only inside a running configuration (it needs the events
	// app): run an empty one, without the admin endpoint or an autosaved copy.
	if err := caddy.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}}}`), true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	rp := &reverseproxy.Handler{Upstreams: reverseproxy.UpstreamPool{{Dial: upstream.Listener.Addr().String()}}}
	ctx, cancel := caddy.NewContext(caddy.ActiveContext())
	if err := rp.Provision(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rp.Cleanup()
		cancel()
	})
	end := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { return rp.ServeHTTP(w, r, end) })
	// The front prepares requests the way Caddy's server does before its routes run.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{})
		if err := h.ServeHTTP(w, r, next); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	if h2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 30 * time.Second
	return srv, client, seen
}

// spoofed lists the names (any case, '_' for '-') a client may try to pass off as the
// handler's identity headers.
var spoofed = []string{"X_Caracal_Sub", "x-caracal_sub", "X-CARACAL-ZONE", "x_caracal-extra", "X-Caracal-Sid"}

// checkUpstream fails on every identity-like name the upstream saw except the
// handler's own, with their values, and checks the innocent fields made it through.
func checkUpstream(t *testing.T, seen <-chan observation, sub string, wantTrailer map[string]string) {
	t.Helper()
	var o observation
	select {
	case o = <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream got no request")
	}
	own := map[string]bool{"X-Caracal-Sub": true, "X-Caracal-Client-Id": true, "X-Caracal-Zone": true, "X-Caracal-Scope": true, "X-Caracal-Sid": true}
	for name, v := range o.Header {
		if identityName(name) && !own[name] || strings.Contains(strings.Join(v, ","), "spoof") {
			t.Errorf("upstream saw header %s: %q", name, v)
		}
	}
	if got := o.Header.Values("X-Caracal-Sub"); len(got) != 1 || got[0] != sub {
		t.Errorf("upstream saw X-Caracal-Sub %q, want %q", got, sub)
	}
	for name, v := range o.Trailer {
		if identityName(name) || strings.Contains(strings.Join(v, ","), "spoof") {
			t.Errorf("upstream saw trailer %s: %q", name, v)
		}
	}
	for name, v := range wantTrailer {
		if got := o.Trailer.Get(name); got != v {
			t.Errorf("upstream saw trailer %s %q, want %q (trailers: %v)", name, got, v, o.Trailer)
		}
	}
	if o.Body != "hello" {
		t.Errorf("upstream saw body %q", o.Body)
	}
}

// Over HTTP/1.1, written by hand so that names reach the server exactly as sent: spoofed
// headers, spoofed declared trailers and a spoofed trailer that was never declared.
func TestSpoofedIdentityHeadersAndTrailersNeverReachTheUpstreamHTTP1(t *testing.T) {
	f := newFixture(t)
	tok, c := f.token(t, nil)
	h := f.newHandler(t, &Handler{})
	srv, _, seen := proxied(t, h, false)

	var req strings.Builder
	fmt.Fprintf(&req, "POST /x HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer %s\r\n", tok)
	for _, name := range spoofed {
		fmt.Fprintf(&req, "%s: spoof-header\r\n", name)
	}
	req.WriteString("Trailer: X-Caracal-Sub, X_Caracal_Zone, x-caracal_scope, X-Checksum\r\n")
	req.WriteString("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
	req.WriteString("5\r\nhello\r\n0\r\n")
	req.WriteString("X-Caracal-Sub: spoof-trailer\r\nX_Caracal_Zone: spoof-trailer\r\nx-caracal_scope: spoof-trailer\r\n")
	req.WriteString("X-Caracal-Undeclared: spoof-trailer\r\nX_caracal_sid: spoof-trailer\r\nX-Checksum: abc\r\n\r\n")

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	checkUpstream(t, seen, c.Subject, map[string]string{"X-Checksum": "abc"})
}

// Over HTTP/2 the client declares its trailers; the spoofed ones are stripped, the
// others forwarded.
func TestSpoofedIdentityHeadersAndTrailersNeverReachTheUpstreamHTTP2(t *testing.T) {
	f := newFixture(t)
	tok, c := f.token(t, nil)
	h := f.newHandler(t, &Handler{})
	srv, client, seen := proxied(t, h, true)

	body := &trailerBody{r: strings.NewReader("hello")}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/x", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+tok)
	for _, name := range spoofed {
		req.Header[name] = []string{"spoof-header"}
	}
	req.Trailer = http.Header{"X-Caracal-Sub": nil, "X_caracal_zone": nil, "X-Checksum": nil}
	body.trailer = req.Trailer
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("status %d over %s: %s", resp.StatusCode, resp.Proto, got)
	}
	checkUpstream(t, seen, c.Subject, map[string]string{"X-Checksum": "abc"})
}

// trailerBody fills in the request's trailer values when the body ends, as a client
// that computes a checksum while sending would.
type trailerBody struct {
	r       io.Reader
	trailer http.Header
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		for name := range b.trailer {
			b.trailer[name] = []string{"spoof-trailer"}
		}
		b.trailer["X-Checksum"] = []string{"abc"}
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }
