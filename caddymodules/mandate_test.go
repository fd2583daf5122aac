package caddymodules

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/verify"
)

// serve runs h in front of next on a loopback server: HTTP/1.1, or HTTP/2 over TLS.
func serve(t *testing.T, h *Handler, next caddyhttp.HandlerFunc, h2 bool) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repl := caddy.NewReplacer()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
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
	return srv, client
}

func get(t *testing.T, client *http.Client, url, auth string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// counterValue reads a counter of the handler's metrics.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func hello(w http.ResponseWriter, _ *http.Request) error {
	_, err := io.WriteString(w, "hello")
	return err
}

func TestHandlerAnswers(t *testing.T) {
	f := newFixture(t)
	other := newFixture(t)
	h := f.newHandler(t, &Handler{Scopes: []string{"read"}})
	srv, client := serve(t, h, hello, false)
	srvURL := srv.URL

	good, _ := f.token(t, nil)
	session := f.sign(t, mandate.TypSession, func() *mandate.Claims {
		c := f.claims(t)
		c.Audience, c.Use, c.Scope = f.issuer, mandate.UseSession, ""
		return c
	}())
	otherResource, _ := f.token(t, func(c *mandate.Claims) { c.Audience = "https://elsewhere.test/api" })
	otherZone, _ := other.token(t, func(c *mandate.Claims) { c.Issuer, c.ZoneID = other.issuer, other.zone })
	parts := strings.Split(good, ".")
	sig := []byte(parts[2])
	// Another base64url letter: flipping bits could yield '.' or a character outside
	// the bearer syntax, which is a different refusal.
	if sig[len(sig)/2] == 'A' {
		sig[len(sig)/2] = 'B'
	} else {
		sig[len(sig)/2] = 'A'
	}
	if sig[len(sig)/2] == parts[2][len(sig)/2] {
		t.Fatal("signature unchanged")
	}
	badSignature := parts[0] + "." + parts[1] + "." + string(sig)
	expired, _ := f.token(t, func(c *mandate.Claims) { c.Expiry = time.Now().Add(-2 * time.Minute).Unix() })
	writeOnly, _ := f.token(t, func(c *mandate.Claims) { c.Scope = "write" })
	revoked, rc := f.token(t, nil)
	f.revoke(t, h, rc.SID)

	realm := `Bearer realm="` + testResource + `"`
	cases := []struct {
		name, auth string
		status     int
		challenge  string // prefix of WWW-Authenticate
		label      string // refusal counter label
	}{
		{"without a token", "", 401, realm, "missing"},
		{"with another scheme", "Basic YTpi", 401, realm, "missing"},
		{"with a malformed header", "Bearer a,b", 400, realm + `, error="invalid_request"`, "invalid_request"},
		{"with a token that is no JWT", "Bearer abc", 401, realm + `, error="invalid_token"`, "invalid_token"},
		{"with a session mandate", "Bearer " + session, 401, realm + `, error="invalid_token", error_description="a resource mandate is required`, "invalid_token"},
		{"with a mandate for another resource", "Bearer " + otherResource, 401, realm + `, error="invalid_token"`, "invalid_token"},
		{"with a mandate of another zone", "Bearer " + otherZone, 401, realm + `, error="invalid_token"`, "invalid_token"},
		{"with a bad signature", "Bearer " + badSignature, 401, realm + `, error="invalid_token"`, "invalid_token"},
		{"with an expired mandate", "Bearer " + expired, 401, realm + `, error="invalid_token"`, "invalid_token"},
		{"without the required scope", "Bearer " + writeOnly, 403, realm + `, error="insufficient_scope", error_description="the mandate lacks a required scope", scope="read"`, "insufficient_scope"},
		{"with a revoked mandate", "Bearer " + revoked, 401, realm + `, error="invalid_token", error_description="the mandate has been revoked"`, "invalid_token"},
	}
	for _, c := range cases {
		t.Run("refuses a request "+c.name, func(t *testing.T) {
			before := counterValue(t, h.metrics.refused.WithLabelValues(c.label))
			resp, body := get(t, client, srvURL, c.auth)
			if resp.StatusCode != c.status || body == "hello" {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			ch := resp.Header.Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, c.challenge) {
				t.Fatalf("WWW-Authenticate %q, want prefix %q", ch, c.challenge)
			}
			if c.label == "missing" && strings.Contains(ch, "error=") {
				t.Fatalf("a missing token carries an error code: %q", ch)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Fatal("refusal is cacheable")
			}
			if got := counterValue(t, h.metrics.refused.WithLabelValues(c.label)) - before; got != 1 {
				t.Fatalf("refusal counted %v times under %q", got, c.label)
			}
		})
	}
	t.Run("passes a valid mandate", func(t *testing.T) {
		before := counterValue(t, h.metrics.allowed)
		resp, body := get(t, client, srvURL, "Bearer "+good)
		if resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("status %d, body %q", resp.StatusCode, body)
		}
		if counterValue(t, h.metrics.allowed)-before != 1 {
			t.Fatal("the pass was not counted")
		}
	})
}

func TestHandlerSetsTheIdentity(t *testing.T) {
	f := newFixture(t)
	var (
		mu     sync.Mutex
		header http.Header
		values map[string]string
	)
	capture := func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		mu.Lock()
		defer mu.Unlock()
		header = r.Header.Clone()
		values = map[string]string{}
		for _, name := range []string{"id", "client_id", "zone_id", "scope", "sid", "root_sid", "jti"} {
			values[name] = repl.ReplaceAll("{http.auth.user."+name+"}", "<unset>")
		}
		return nil
	}
	tok, c := f.token(t, func(c *mandate.Claims) { c.Subject = "root-agent" })
	for _, forward := range []bool{true, false} {
		t.Run(fmt.Sprintf("forward_mandate %v", forward), func(t *testing.T) {
			h := f.newHandler(t, &Handler{ForwardMandate: &forward})
			srv, client := serve(t, h, capture, false)
			resp, _ := get(t, client, srv.URL, "Bearer "+tok,
				"X-Caracal-Sub", "mallory", "x-caracal-zone", "evil", "X-CARACAL-EXTRA", "injected", "X-Caracal-Sid", "s1")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			mu.Lock()
			defer mu.Unlock()
			want := map[string]string{
				"X-Caracal-Sub": "root-agent", "X-Caracal-Client-Id": c.ClientID, "X-Caracal-Zone": f.zone,
				"X-Caracal-Scope": "read write", "X-Caracal-Sid": c.SID,
			}
			for name, v := range header {
				if strings.HasPrefix(strings.ToLower(name), "x-caracal-") && (want[name] == "" || len(v) != 1 || v[0] != want[name]) {
					t.Errorf("upstream saw %s: %q", name, v)
				}
			}
			for name, v := range want {
				if header.Get(name) != v {
					t.Errorf("upstream saw %s %q, want %q", name, header.Get(name), v)
				}
			}
			if got := header.Get("Authorization"); (got == "Bearer "+tok) != forward || (!forward && got != "") {
				t.Errorf("upstream saw Authorization %q with forward_mandate %v", got, forward)
			}
			wantValues := map[string]string{"id": "root-agent", "client_id": c.ClientID, "zone_id": f.zone, "scope": "read write", "sid": c.SID, "root_sid": c.RootSID, "jti": c.ID}
			for name, v := range wantValues {
				if values[name] != v {
					t.Errorf("{http.auth.user.%s} = %q, want %q", name, values[name], v)
				}
			}
		})
	}
}

// streamer writes a body of total bytes in small pieces as fast as the client takes it
// and reports the error that ended its writes on werr.
func streamer(total int, contentLength bool, werr chan<- error) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if contentLength {
			w.Header().Set("Content-Length", strconv.Itoa(total))
		}
		w.WriteHeader(http.StatusOK)
		chunk := payload(1000)
		for sent := 0; sent < total; {
			n, err := w.Write(chunk[:min(len(chunk), total-sent)])
			sent += n
			if err != nil {
				werr <- err
				return err
			}
		}
		werr <- nil
		return nil
	}
}

func TestHandlerAbortsAStreamOnRevocation(t *testing.T) {
	const total = 64 << 20
	for _, tc := range []struct {
		name              string
		h2, contentLength bool
	}{
		{"HTTP/1.1 chunked", false, false},
		{"HTTP/1.1 with Content-Length", false, true},
		{"HTTP/2", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			h := f.newHandler(t, &Handler{CheckBytes: 4096})
			werr := make(chan error, 1)
			srv, client := serve(t, h, streamer(total, tc.contentLength, werr), tc.h2)
			tok, c := f.token(t, nil)
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			testenv.ReadUntil(t, resp.Body, 64<<10)
			cutBefore := counterValue(t, h.metrics.streamsCut)
			f.revoke(t, h, c.SID)
			n, err := testenv.BodyEnd(t, resp.Body)
			testenv.AssertAborted(t, err, tc.h2)
			if n+64<<10 >= total {
				t.Fatalf("the whole body arrived (%d bytes)", n+64<<10)
			}
			if err := <-werr; !errors.Is(err, verify.ErrResponseRevoked) {
				t.Fatalf("the upstream's write failed with %v, want verify.ErrResponseRevoked", err)
			}
			testenv.WaitFor(t, "the cut stream to be counted", func() bool { return counterValue(t, h.metrics.streamsCut) > cutBefore })
		})
	}
}

// idle sends the headers of an event stream and then nothing until the request ends.
func idle(ended chan<- error) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
		<-r.Context().Done()
		ended <- r.Context().Err()
		return nil
	}
}

func TestHandlerCutsAnIdleStreamOnRevocation(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			f := newFixture(t)
			h := f.newHandler(t, &Handler{})
			ended := make(chan error, 1)
			srv, client := serve(t, h, idle(ended), h2)
			tok, c := f.token(t, nil)
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			f.armWatch(t)
			f.revoke(t, h, c.SID)
			_, err = testenv.BodyEnd(t, resp.Body)
			testenv.AssertAborted(t, err, h2)
			if err := <-ended; !errors.Is(err, context.Canceled) {
				t.Fatalf("the upstream's request ended with %v, want context.Canceled", err)
			}
		})
	}
}

// echoUpgrade switches protocols and echoes what the client sends; its end (the read
// error) goes to ended.
func echoUpgrade(ended chan<- error) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Upgrade", "echo")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			ended <- err
			return err
		}
		defer conn.Close()
		if err := brw.Flush(); err != nil {
			ended <- err
			return nil
		}
		_, err = io.Copy(conn, brw)
		ended <- err
		return nil
	}
}

func TestHandlerClosesAnUpgradedConnectionOnRevocation(t *testing.T) {
	f := newFixture(t)
	h := f.newHandler(t, &Handler{})
	ended := make(chan error, 1)
	srv, _ := serve(t, h, echoUpgrade(ended), false)
	tok, c := f.token(t, nil)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", tok)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo %q, %v", echo, err)
	}
	f.armWatch(t)
	f.revoke(t, h, c.SID)
	if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read after the revocation: %d, %v; want the connection closed", n, err)
	}
	if err := <-ended; err == nil {
		t.Fatal("the upstream side of the tunnel did not see the connection close")
	}
}

func TestHandlerResponsesAndMandateExpiry(t *testing.T) {
	t.Run("a mandate admitted within the leeway is not cut at its first byte", func(t *testing.T) {
		f := newFixture(t)
		h := f.newHandler(t, &Handler{})
		werr := make(chan error, 1)
		srv, client := serve(t, h, streamer(256<<10, true, werr), false)
		tok, _ := f.token(t, func(c *mandate.Claims) { c.Expiry = time.Now().Add(-5 * time.Second).Unix() })
		resp, body := get(t, client, srv.URL, "Bearer "+tok)
		if resp.StatusCode != 200 || len(body) != 256<<10 {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("an idle stream ends when its mandate expires", func(t *testing.T) {
		f := newFixture(t)
		// A negative leeway is none: the mandate ends exactly at exp.
		h := f.newHandler(t, &Handler{Leeway: caddy.Duration(-1)})
		ended := make(chan error, 1)
		srv, client := serve(t, h, idle(ended), false)
		tok, _ := f.token(t, func(c *mandate.Claims) { c.Expiry = f.clock.Now().Add(2 * time.Second).Unix() })
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// Once the watch is in place, its expiry timer fires when the clock passes exp.
		f.armWatch(t)
		f.clock.Advance(2 * time.Second)
		_, err = testenv.BodyEnd(t, resp.Body)
		testenv.AssertAborted(t, err, false)
		<-ended
	})
	t.Run("end_on_expiry off lets the stream outlive the mandate", func(t *testing.T) {
		f := newFixture(t)
		off := false
		h := f.newHandler(t, &Handler{Leeway: caddy.Duration(-1), EndOnExpiry: &off})
		tok, _ := f.token(t, func(c *mandate.Claims) { c.Expiry = f.clock.Now().Add(time.Second).Unix() })
		// The handler lets the mandate expire before writing: with end_on_expiry on, the
		// first boundary check would end the response.
		srv, client := serve(t, h, func(w http.ResponseWriter, r *http.Request) error {
			f.clock.Advance(2 * time.Second)
			_, err := io.WriteString(w, "late")
			return err
		}, false)
		resp, body := get(t, client, srv.URL, "Bearer "+tok)
		if resp.StatusCode != 200 || body != "late" {
			t.Fatalf("status %d, body %q", resp.StatusCode, body)
		}
	})
}

func TestExchangeRefusal(t *testing.T) {
	cases := []struct {
		status     int
		code       string
		wantStatus int
		wantCode   string
	}{
		{400, "invalid_grant", 401, "invalid_token"},
		{401, "invalid_client", 401, "invalid_token"},
		{400, "invalid_target", 401, "invalid_token"},
		{403, "access_denied", 403, "insufficient_scope"},
		{400, "invalid_scope", 403, "insufficient_scope"},
		{429, "slow_down", 503, ""},
		{503, "temporarily_unavailable", 503, ""},
		{500, "", 503, ""},
		{400, "", 503, ""},
		{401, "", 503, ""},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d %s", c.status, c.code), func(t *testing.T) {
			err := exchangeRefusal(c.status, c.code, "because")
			if err == nil {
				t.Fatal("no error")
			}
			var got *verify.Error
			if !errors.As(err, &got) || got.Status != c.wantStatus || got.Code != c.wantCode {
				t.Fatalf("got %v, want an RFC 6750 answer %d %q", err, c.wantStatus, c.wantCode)
			}
		})
	}
}
