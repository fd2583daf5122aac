package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/revocation"
)

// hello is what the demo upstream's /hello answers.
type hello struct {
	Hello     string            `json:"hello"`
	Caracal   map[string]string `json:"caracal"`
	Forwarded bool              `json:"mandate_forwarded"`
}

func decodeHello(t *testing.T, body []byte) hello {
	t.Helper()
	var h hello
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatalf("not the demo upstream's answer: %q", body)
	}
	return h
}

// refused asserts an RFC 6750 refusal: the status and the WWW-Authenticate challenge,
// which must start with want.
func refused(t *testing.T, resp *http.Response, body []byte, status int, want string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, want) {
		t.Fatalf("WWW-Authenticate %q, want it to start with %q", ch, want)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("the refusal may be cached")
	}
}

// TestGatewayOnTheLocalBus runs the STS and the gateway in one process, revocations on
// the in-process bus, and checks every answer of docs/protocol.md section 7 through Caddy.
func TestGatewayOnTheLocalBus(t *testing.T) {
	up := newUpstream(t)
	in := startGateway(t, gatewayConfig{serveSTS: true, upstream: up.addr()})
	base := in.url("")
	realm := `Bearer realm="` + base + `/api"`
	h1, h2 := in.newClient(t, false, 8), in.newClient(t, true, 8)

	t.Run("answers", func(t *testing.T) {
		session, good := in.agentMandate(t, base)
		sid := claimsOf(t, good).SID

		t.Run("RFC 6750 section 3: a missing token is 401 without an error code, with the route's scope", func(t *testing.T) {
			resp, body := in.call(t, h2, "/api/hello", "")
			refused(t, resp, body, http.StatusUnauthorized, realm)
			if ch, want := resp.Header.Get("WWW-Authenticate"), realm+`, scope="read", resource_metadata="`+base+`/.well-known/oauth-protected-resource/api"`; ch != want {
				t.Fatalf("WWW-Authenticate %q, want the realm, the route's scopes and the resource metadata only: %q", ch, want)
			}
		})
		t.Run("a token that is no mandate is invalid_token", func(t *testing.T) {
			resp, body := in.call(t, h2, "/api/hello", "abc.def")
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token"`)
		})
		t.Run("a session mandate is invalid_token", func(t *testing.T) {
			resp, body := in.call(t, h2, "/api/hello", session)
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token", error_description="a resource mandate is required`)
		})
		t.Run("a mandate for another resource is invalid_token", func(t *testing.T) {
			other := in.mandate(t, "alpha", session, base+"/other", "read")
			resp, body := in.call(t, h2, "/api/hello", other)
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token", error_description="mandate: wrong audience"`)
		})
		t.Run("a mandate of another zone is invalid_token", func(t *testing.T) {
			beta := in.session(t, "beta", "agent", betaSecret)
			other := in.mandate(t, "beta", beta, base+"/api", "read")
			if claimsOf(t, other).Audience != base+"/api" {
				t.Fatal("the other zone's mandate is not for the same resource identifier")
			}
			resp, body := in.call(t, h2, "/api/hello", other)
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token"`)
		})
		t.Run("a bad signature is invalid_token", func(t *testing.T) {
			parts := strings.Split(good, ".")
			sig := []byte(parts[2])
			i := len(sig) / 2
			if sig[i] == 'A' {
				sig[i] = 'B'
			} else {
				sig[i] = 'A'
			}
			resp, body := in.call(t, h2, "/api/hello", parts[0]+"."+parts[1]+"."+string(sig))
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token", error_description="mandate: invalid signature"`)
		})
		t.Run("a missing scope is 403 insufficient_scope naming it", func(t *testing.T) {
			resp, body := in.call(t, h2, "/write/hello", good)
			refused(t, resp, body, http.StatusForbidden, realm+`, error="insufficient_scope", error_description="the mandate lacks a required scope", scope="write"`)
		})
		t.Run("client-sent X-Caracal headers are replaced", func(t *testing.T) {
			resp, body := in.call(t, h1, "/api/hello", good,
				"X-Caracal-Sub", "mallory", "x-caracal-zone", "evil", "X-CARACAL-EXTRA", "injected", "X-Caracal-Sid", "sid-of-someone-else")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := decodeHello(t, body)
			want := map[string]string{"sub": "agent", "client-id": "agent", "zone": "alpha", "scope": "read", "sid": sid}
			if got.Hello != "agent" || len(got.Caracal) != len(want) || !got.Forwarded {
				t.Fatalf("upstream saw %+v", got)
			}
			for k, v := range want {
				if got.Caracal[k] != v {
					t.Fatalf("upstream saw X-Caracal-%s %q, want %q", k, got.Caracal[k], v)
				}
			}
		})
		t.Run("forward_mandate off keeps the mandate from the upstream", func(t *testing.T) {
			resp, body := in.call(t, h1, "/noforward/hello", good)
			if got := decodeHello(t, body); resp.StatusCode != http.StatusOK || got.Forwarded || got.Hello != "agent" {
				t.Fatalf("status %d, upstream saw %+v", resp.StatusCode, got)
			}
		})
		t.Run("the identity placeholders reach other directives", func(t *testing.T) {
			resp, body := in.call(t, h1, "/whoami", good)
			if want := "agent|agent|alpha|read|" + sid; resp.StatusCode != http.StatusOK || string(body) != want {
				t.Fatalf("status %d, body %q, want %q", resp.StatusCode, body, want)
			}
		})
		t.Run("a revoked mandate is invalid_token", func(t *testing.T) {
			s, m := in.agentMandate(t, base)
			if resp, body := in.call(t, h2, "/api/hello", m); resp.StatusCode != http.StatusOK {
				t.Fatalf("before the revocation: %d %s", resp.StatusCode, body)
			}
			in.revoke(t, "alpha", s)
			resp, body := in.awaitStatus(t, h2, "/api/hello", m, http.StatusUnauthorized)
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token", error_description="the mandate has been revoked"`)
			// The mandate of the other session is untouched.
			if resp, body := in.call(t, h2, "/api/hello", good); resp.StatusCode != http.StatusOK {
				t.Fatalf("another session's mandate: %d %s", resp.StatusCode, body)
			}
		})
	})

	t.Run("revocation during a response", func(t *testing.T) {
		streams := []struct {
			name, path string
			h2         bool
			chunked    bool // HTTP/1.1 chunked framing, else a Content-Length (or HTTP/2)
			read       int  // bytes read before the revocation
		}{
			{"cuts an HTTP/1.1 body with Content-Length short", "/api/stream?bytes=268435456&delay_ms=20", false, false, 256 << 10},
			{"cuts an HTTP/1.1 chunked event stream before its last chunk", "/api/events?interval_ms=20", false, true, 64},
			{"resets an HTTP/2 stream", "/api/stream?bytes=268435456&delay_ms=20", true, false, 256 << 10},
			{"cuts an idle HTTP/1.1 event stream", "/api/events?interval_ms=0", false, true, 0},
			{"resets an idle HTTP/2 event stream", "/api/events?interval_ms=0", true, false, 0},
		}
		for _, s := range streams {
			t.Run(s.name, func(t *testing.T) {
				t.Parallel()
				session, m := in.agentMandate(t, base)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				client := h1
				if s.h2 {
					client = h2
				}
				resp := in.open(t, ctx, client, s.path, m)
				defer resp.Body.Close()
				if s.h2 != (resp.ProtoMajor == 2) || s.chunked != slices.Contains(resp.TransferEncoding, "chunked") {
					t.Fatalf("spoke %s with transfer encoding %v", resp.Proto, resp.TransferEncoding)
				}
				if !s.chunked && resp.ContentLength <= 0 && !strings.Contains(s.path, "events") {
					t.Fatalf("no Content-Length on %s", s.path)
				}
				testenv.ReadUntil(t, resp.Body, s.read)
				in.revoke(t, "alpha", session)
				n, err := testenv.BodyEnd(t, resp.Body)
				testenv.AssertAborted(t, err, s.h2)
				if cl := resp.ContentLength; cl > 0 && n+int64(s.read) >= cl {
					t.Fatalf("%d of %d bytes arrived", n+int64(s.read), cl)
				}
			})
		}
		t.Run("closes an upgraded connection", func(t *testing.T) {
			t.Parallel()
			session, m := in.agentMandate(t, base)
			conn, br := in.upgrade(t, "/ws/tunnel", m)
			if _, err := io.WriteString(conn, "ping"); err != nil {
				t.Fatal(err)
			}
			echo := make([]byte, 4)
			if _, err := io.ReadFull(br, echo); err != nil || string(echo) != "ping" {
				t.Fatalf("echo %q, %v", echo, err)
			}
			in.revoke(t, "alpha", session)
			if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Fatalf("the tunnel still carries data after the revocation: %d, %v", n, err)
			}
			select {
			case <-up.tunnels:
			case <-time.After(45 * time.Second):
				t.Fatal("the upstream side of the tunnel stayed open")
			}
		})
	})

	t.Run("exchange mode", func(t *testing.T) {
		session := in.session(t, "alpha", "agent", agentSecret)
		sid := claimsOf(t, session).SID
		var forwarded []string
		for range 2 {
			resp, body := in.call(t, h2, "/exchange/echo", session)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var seen map[string]string
			if err := json.Unmarshal(body, &seen); err != nil {
				t.Fatal(err)
			}
			tok, ok := strings.CutPrefix(seen["authorization"], "Bearer ")
			if !ok || tok == session {
				t.Fatalf("upstream saw Authorization %q", seen["authorization"])
			}
			c := claimsOf(t, tok)
			if c.Use != "resource" || c.Audience != base+"/api" || c.SID != sid || c.Scope != "read" || seen["x-caracal-sid"] != sid {
				t.Fatalf("upstream got %+v with identity %v", c, seen)
			}
			forwarded = append(forwarded, tok)
		}
		if forwarded[0] != forwarded[1] {
			t.Fatal("the resource mandate was not reused for the second request")
		}
		t.Run("a resource mandate is not a subject token", func(t *testing.T) {
			resp, body := in.call(t, h2, "/exchange/echo", forwarded[0])
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token"`)
		})
		t.Run("a revoked session is refused", func(t *testing.T) {
			in.revoke(t, "alpha", session)
			resp, body := in.awaitStatus(t, h2, "/exchange/echo", session, http.StatusUnauthorized)
			refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token", error_description="the mandate has been revoked"`)
		})
	})
}

// TestGatewayEndsResponsesAtMandateExpiry issues three-second resource mandates and
// checks that responses still running when one expires (plus the route's leeway) are
// ended like revoked ones, and that the mandate is then refused as expired.
func TestGatewayEndsResponsesAtMandateExpiry(t *testing.T) {
	in := startGateway(t, gatewayConfig{serveSTS: true, sts: "mandate_lifetime 3s", mandate: "leeway 1s"})
	base := in.url("")
	_, m := in.agentMandate(t, base)
	if c := claimsOf(t, m); c.Expiry-time.Now().Unix() > 3 {
		t.Fatalf("the mandate lives until %d, more than three seconds", c.Expiry)
	}
	h1, h2 := in.newClient(t, false, 2), in.newClient(t, true, 2)
	t.Run("streams end", func(t *testing.T) {
		for _, s := range []struct {
			name, path string
			h2         bool
		}{
			{"an HTTP/1.1 event stream", "/api/events?interval_ms=100", false},
			{"an idle HTTP/2 event stream", "/api/events?interval_ms=0", true},
		} {
			t.Run(s.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				client := h1
				if s.h2 {
					client = h2
				}
				resp := in.open(t, ctx, client, s.path, m)
				defer resp.Body.Close()
				_, err := testenv.BodyEnd(t, resp.Body)
				testenv.AssertAborted(t, err, s.h2)
			})
		}
	})
	resp, body := in.call(t, h2, "/api/hello", m)
	refused(t, resp, body, http.StatusUnauthorized, `Bearer realm="`+base+`/api", error="invalid_token", error_description="mandate: token expired"`)
}

// TestGatewayAcrossProcessesOverRedis runs two caracal processes of one deployment: A
// serves the STS and a gateway, B only a gateway (with the same zones from the same
// PostgreSQL database), and revocations travel between them over Redis streams. B
// reaches Redis through a relay the test can cut.
func TestGatewayAcrossProcessesOverRedis(t *testing.T) {
	rs := newRedisStreams(t)
	storage := postgresStorage(t)
	redisURL, err := url.Parse(rs.url)
	if err != nil {
		t.Fatal(err)
	}
	relay := testenv.NewProxy(t, redisURL.Host)
	a := startGateway(t, gatewayConfig{serveSTS: true, storage: storage, revocation: rs.revocation(rs.url)})
	base := a.url("")
	b := startGateway(t, gatewayConfig{base: base, storage: storage, revocation: rs.revocation(rs.via(t, relay.Addr())), mandate: "max_staleness 8s"})
	realm := `Bearer realm="` + base + `/api"`
	ca, cb := a.newClient(t, true, 4), b.newClient(t, true, 4)

	ok := func(t *testing.T, in *instance, client *http.Client, m string) {
		t.Helper()
		if resp, body := in.call(t, client, "/api/hello", m); resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
	refusedOn := func(t *testing.T, in *instance, client *http.Client, m string) {
		t.Helper()
		resp, body := in.awaitStatus(t, client, "/api/hello", m, http.StatusUnauthorized)
		refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token", error_description="the mandate has been revoked"`)
	}

	var revokedEarly string
	t.Run("a revocation on A makes B refuse", func(t *testing.T) {
		s, m := a.agentMandate(t, base)
		ok(t, b, cb, m)
		a.revoke(t, "alpha", s)
		refusedOn(t, b, cb, m)
		refusedOn(t, a, ca, m)
		revokedEarly = m
	})

	t.Run("a revocation on A cuts a stream on B", func(t *testing.T) {
		s, m := a.agentMandate(t, base)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp := b.open(t, ctx, cb, "/api/stream?bytes=268435456&delay_ms=20", m)
		defer resp.Body.Close()
		testenv.ReadUntil(t, resp.Body, 128<<10)
		a.revoke(t, "alpha", s)
		_, err := testenv.BodyEnd(t, resp.Body)
		testenv.AssertAborted(t, err, true)
	})

	t.Run("forged stream entries are ignored", func(t *testing.T) {
		_, target := a.agentMandate(t, base)
		sid := claimsOf(t, target).SID
		now := time.Now()
		fields := revocation.Event{ZoneID: "alpha", SessionID: sid, Reason: "forged", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}.Fields()
		wrongKey := revocation.Sign([]byte("not-the-deployment-key"), revocation.StreamSessionsRevoke, fields)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, sig := range []string{"", wrongKey, strings.Repeat("0", len(wrongKey)), "not hex"} {
			values := map[string]any{}
			for k, v := range fields {
				values[k] = v
			}
			if sig != "" {
				values["sig"] = sig
			}
			if err := rs.client.XAdd(ctx, &redis.XAddArgs{Stream: rs.prefix + revocation.StreamSessionsRevoke, Values: values}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		// A genuine revocation after the forged entries: once B applied it, it has read
		// past them.
		marker, markerMandate := a.agentMandate(t, base)
		a.revoke(t, "alpha", marker)
		refusedOn(t, b, cb, markerMandate)
		refusedOn(t, a, ca, markerMandate)
		ok(t, b, cb, target)
		ok(t, a, ca, target)
	})

	t.Run("a process started after the revocation refuses at once", func(t *testing.T) {
		c := startGateway(t, gatewayConfig{base: base, storage: storage, revocation: rs.revocation(rs.url)})
		cc := c.newClient(t, true, 2)
		resp, body := c.call(t, cc, "/api/hello", revokedEarly)
		refused(t, resp, body, http.StatusUnauthorized, realm+`, error="invalid_token", error_description="the mandate has been revoked"`)
		_, fresh := a.agentMandate(t, base)
		ok(t, c, cc, fresh)
	})

	t.Run("B fails closed while Redis is out of reach and catches up after", func(t *testing.T) {
		s, m := a.agentMandate(t, base)
		_, other := a.agentMandate(t, base)
		ok(t, b, cb, m)
		relay.Cut(true)
		a.revoke(t, "alpha", s)
		sid := claimsOf(t, m).SID
		testenv.WaitFor(t, "the revocation to be in the stream", func() bool {
			for _, got := range rs.revokedSessions(t) {
				if got == sid {
					return true
				}
			}
			return false
		})
		resp, body := b.awaitStatus(t, cb, "/api/hello", other, http.StatusServiceUnavailable)
		if resp.Header.Get("Retry-After") == "" || resp.Header.Get("WWW-Authenticate") != "" {
			t.Fatalf("stale answer: %v %s", resp.Header, body)
		}
		// A, reading Redis directly, is not affected.
		ok(t, a, ca, other)
		relay.Cut(false)
		refusedOn(t, b, cb, m)
		b.awaitStatus(t, cb, "/api/hello", other, http.StatusOK)
	})
}
