package verify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

// answer is what a request should get: the status, the RFC 6750 error code (empty for
// none), a fragment of the error description and the scope attribute.
type answer struct {
	status int
	code   string
	desc   string
	scope  string
}

var passes = answer{status: http.StatusOK}

func refused(desc string) answer {
	return answer{status: http.StatusUnauthorized, code: "invalid_token", desc: desc}
}

// requestCase is one request to the resource and the answer it must get, both from
// BearerToken plus Verify and from Middleware.
type requestCase struct {
	name string
	// opts adjusts the verifier's options (fixture defaults when nil).
	opts func(t *testing.T, f *fixture, o *Options)
	// prepare changes the zone's state (revocations, epochs) before the request.
	prepare func(f *fixture)
	// token is the mandate presented (a valid direct mandate when nil).
	token func(t *testing.T, f *fixture) string
	// request places the token on the request (an Authorization: Bearer header when nil).
	request func(r *http.Request, token string)
	want    answer
}

func requestCases() []requestCase {
	delegated := func(t *testing.T, f *fixture) string { return f.sign(t, f.delegatedClaims()) }
	staleSource := func(age time.Duration) func(*testing.T, *fixture, *Options) {
		return func(_ *testing.T, f *fixture, o *Options) {
			src := newWatermarkSource()
			if age >= 0 {
				src.set(f.clock.Now().Add(-age))
			}
			o.Source = src
		}
	}
	header := func(values ...string) func(*http.Request, string) {
		return func(r *http.Request, token string) {
			for _, v := range values {
				r.Header.Add("Authorization", strings.ReplaceAll(v, "TOKEN", token))
			}
		}
	}
	return []requestCase{
		{name: "a valid resource mandate passes", want: passes},
		{name: "a valid delegated mandate passes", token: delegated, want: passes},
		{name: "the scheme name is matched case-insensitively", request: header("bearer TOKEN"), want: passes},
		{
			name:    "a request without an Authorization header gets a challenge without an error code",
			request: func(*http.Request, string) {},
			want:    answer{status: http.StatusUnauthorized, desc: "a bearer mandate is required"},
		},
		{
			name:    "a Basic Authorization header counts as no bearer token",
			request: header("Basic ZGVtbzpzZWNyZXQ="),
			want:    answer{status: http.StatusUnauthorized, desc: "a bearer mandate is required"},
		},
		{
			name:    "two Authorization headers are an invalid request",
			request: header("Bearer TOKEN", "Bearer TOKEN"),
			want:    answer{status: http.StatusBadRequest, code: "invalid_request", desc: "more than one Authorization header"},
		},
		{
			name:    "a bearer value with a space inside is an invalid request",
			request: header("Bearer TOKEN extra"),
			want:    answer{status: http.StatusBadRequest, code: "invalid_request", desc: "malformed bearer token"},
		},
		{
			name:    "a bearer value with a non-ASCII space inside is an invalid request",
			request: header("Bearer TOKEN\u00a0extra"),
			want:    answer{status: http.StatusBadRequest, code: "invalid_request", desc: "malformed bearer token"},
		},
		{
			name:    "the Bearer scheme without a token is an invalid request",
			request: header("Bearer"),
			want:    answer{status: http.StatusBadRequest, code: "invalid_request", desc: "malformed bearer token"},
		},
		{
			name: "a mandate in the access_token query parameter is ignored",
			request: func(r *http.Request, token string) {
				r.URL.RawQuery = "access_token=" + token
			},
			want: answer{status: http.StatusUnauthorized, desc: "a bearer mandate is required"},
		},
		{
			name: "a mandate in a cookie is ignored",
			request: func(r *http.Request, token string) {
				r.AddCookie(&http.Cookie{Name: "access_token", Value: token})
			},
			want: answer{status: http.StatusUnauthorized, desc: "a bearer mandate is required"},
		},
		{
			name:  "a token that is not a JWS is refused",
			token: func(*testing.T, *fixture) string { return "not-a-mandate" },
			want:  refused("three dot-separated parts"),
		},
		{
			name: "a signature taken from another mandate is refused",
			token: func(t *testing.T, f *fixture) string {
				a := f.token(t, nil)
				b := f.token(t, func(c *mandate.Claims) { c.Scope = "read write admin" })
				return a[:strings.LastIndex(a, ".")] + b[strings.LastIndex(b, "."):]
			},
			want: refused("invalid signature"),
		},
		{
			name: "an unsigned alg none token is refused",
			token: func(t *testing.T, f *fixture) string {
				return rawToken(t, map[string]any{"alg": "none", "typ": mandate.TypResource, "kid": f.signer.KID()}, f.resourceClaims(), nil)
			},
			want: refused("algorithm is not ES256"),
		},
		{
			name: "an HS256 token keyed with the zone's public key is refused",
			token: func(t *testing.T, f *fixture) string {
				der, err := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
				if err != nil {
					t.Fatal(err)
				}
				secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
				return rawToken(t, map[string]any{"alg": "HS256", "typ": mandate.TypResource, "kid": f.signer.KID()}, f.resourceClaims(), func(input []byte) []byte {
					m := hmac.New(sha256.New, secret)
					m.Write(input)
					return m.Sum(nil)
				})
			},
			want: refused("algorithm is not ES256"),
		},
		{
			name: "a mandate signed with a key the zone does not publish is refused",
			token: func(t *testing.T, f *fixture) string {
				_, stranger := newSigner(t)
				return signWith(t, stranger, mandate.TypResource, f.resourceClaims())
			},
			want: refused("kid is not a signing key of the zone"),
		},
		{
			name: "an expired mandate is refused",
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.Expiry = c.IssuedAt - 600 })
			},
			want: refused("token expired"),
		},
		{
			name: "a mandate that is not yet valid is refused",
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.NotBefore += 3600 })
			},
			want: refused("not yet valid"),
		},
		{
			name: "a mandate of another issuer is refused",
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.Issuer = "https://evil.example/zones/zone-a" })
			},
			want: refused("wrong issuer"),
		},
		{
			name: "a mandate for another resource is refused",
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.Audience = "https://billing.example/v1" })
			},
			want: refused("wrong audience"),
		},
		{
			name: "a session mandate presented to the resource is refused",
			token: func(t *testing.T, f *fixture) string {
				c := f.resourceClaims()
				c.Audience, c.Use, c.Scope = testIssuer, mandate.UseSession, ""
				return signWith(t, f.signer, mandate.TypSession, c)
			},
			want: refused("a resource mandate is required"),
		},
		{
			name: "a mandate of another zone signed with that zone's key is refused",
			token: func(t *testing.T, f *fixture) string {
				_, other := newSigner(t)
				c := f.resourceClaims()
				c.Issuer, c.ZoneID = otherIssuer, otherZone
				return signWith(t, other, mandate.TypResource, c)
			},
			want: refused("kid is not a signing key of the zone"),
		},
		{
			name: "a mandate signed with the zone's key but naming another zone is refused",
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.ZoneID = otherZone })
			},
			want: refused("wrong zone"),
		},
		{
			name:  "a mandate without a session is refused",
			token: func(t *testing.T, f *fixture) string { return f.token(t, func(c *mandate.Claims) { c.SID = "" }) },
			want:  refused("carries no session"),
		},
		{
			name:  "a mandate without a root session is refused",
			token: func(t *testing.T, f *fixture) string { return f.token(t, func(c *mandate.Claims) { c.RootSID = "" }) },
			want:  refused("carries no session"),
		},
		{
			name:    "a mandate whose session was revoked is refused",
			prepare: func(f *fixture) { f.revokeSession(testZone, "sid-3") },
			token:   delegated,
			want:    refused("revoked"),
		},
		{
			name:    "a mandate whose root session was revoked is refused",
			prepare: func(f *fixture) { f.revokeSession(testZone, "sid-1") },
			token:   delegated,
			want:    refused("revoked"),
		},
		{
			name:    "a mandate whose delegation edge was revoked is refused",
			prepare: func(f *fixture) { f.revokeEdge(testZone, "edge-2") },
			token:   delegated,
			want:    refused("revoked"),
		},
		{
			name:    "a mandate with a revoked edge earlier in its delegation path is refused",
			prepare: func(f *fixture) { f.revokeEdge(testZone, "edge-1") },
			token:   delegated,
			want:    refused("revoked"),
		},
		{
			name: "revocations of the same ids in another zone do not touch the mandate",
			prepare: func(f *fixture) {
				f.revokeSession(otherZone, "sid-1")
				f.revokeSession(otherZone, "sid-3")
				f.revokeEdge(otherZone, "edge-1")
				f.revokeEdge(otherZone, "edge-2")
			},
			token: delegated,
			want:  passes,
		},
		{
			name: "a mandate without the required scope gets 403 naming it",
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.Scope = "write" })
			},
			want: answer{status: http.StatusForbidden, code: "insufficient_scope", desc: "lacks a required scope", scope: "read"},
		},
		{
			name: "a scope is matched as a whole word, not as a prefix",
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.Scope = "reader write" })
			},
			want: answer{status: http.StatusForbidden, code: "insufficient_scope", desc: "lacks a required scope", scope: "read"},
		},
		{
			name: "granted scopes separated by more than one space still match",
			opts: func(_ *testing.T, _ *fixture, o *Options) { o.Scopes = []string{"read", "write"} },
			token: func(t *testing.T, f *fixture) string {
				return f.token(t, func(c *mandate.Claims) { c.Scope = "write  read" })
			},
			want: passes,
		},
		{
			name:  "every required scope is named when one of them is missing",
			opts:  func(_ *testing.T, _ *fixture, o *Options) { o.Scopes = []string{"read", "admin"} },
			token: func(t *testing.T, f *fixture) string { return f.token(t, nil) },
			want:  answer{status: http.StatusForbidden, code: "insufficient_scope", desc: "lacks a required scope", scope: "read admin"},
		},
		{
			name: "a delegated mandate older than the zone's epoch is refused when stale epochs are rejected",
			opts: func(_ *testing.T, _ *fixture, o *Options) { o.RejectStaleEpoch = true },
			prepare: func(f *fixture) {
				f.epochs.Observe(revocation.EpochEvent{ZoneID: testZone, Epoch: 6, EdgeID: "edge-9", Event: "create"})
			},
			token: delegated,
			want:  refused("delegation graph changed"),
		},
		{
			name: "a delegated mandate older than the zone's epoch passes when stale epochs are accepted",
			prepare: func(f *fixture) {
				f.epochs.Observe(revocation.EpochEvent{ZoneID: testZone, Epoch: 6, EdgeID: "edge-9", Event: "create"})
			},
			token: delegated,
			want:  passes,
		},
		{
			name: "a delegated mandate issued at the zone's current epoch passes",
			opts: func(_ *testing.T, _ *fixture, o *Options) { o.RejectStaleEpoch = true },
			prepare: func(f *fixture) {
				f.epochs.Observe(revocation.EpochEvent{ZoneID: testZone, Epoch: 5, EdgeID: "edge-2", Event: "create"})
			},
			token: delegated,
			want:  passes,
		},
		{
			name: "an undelegated mandate passes whatever the zone's epoch",
			opts: func(_ *testing.T, _ *fixture, o *Options) { o.RejectStaleEpoch = true },
			prepare: func(f *fixture) {
				f.epochs.Observe(revocation.EpochEvent{ZoneID: testZone, Epoch: 60, EdgeID: "edge-9", Event: "revoke"})
			},
			want: passes,
		},
		{
			name: "stale revocation state is answered with 503",
			opts: staleSource(time.Minute),
			want: answer{status: http.StatusServiceUnavailable, desc: "revocation state is stale"},
		},
		{
			name: "a revocation source that never made contact is answered with 503",
			opts: staleSource(-1),
			want: answer{status: http.StatusServiceUnavailable, desc: "revocation state is stale"},
		},
		{
			name: "stale revocation state passes when the verifier fails open",
			opts: func(t *testing.T, f *fixture, o *Options) {
				staleSource(time.Minute)(t, f, o)
				o.FailOpen = true
			},
			want: passes,
		},
		{
			name: "revocation state younger than the bound passes",
			opts: staleSource(DefaultMaxStaleness - time.Second),
			want: passes,
		},
		{
			name: "signing keys that cannot be fetched are answered with 503",
			opts: func(t *testing.T, f *fixture, o *Options) {
				ks := newKeyServer(t, &f.key.PublicKey)
				ks.setStatus(http.StatusServiceUnavailable)
				rk, err := mandate.NewRemoteKeys(mandate.RemoteOptions{Issuer: ks.issuer, Now: f.clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				o.Keys = rk
			},
			want: answer{status: http.StatusServiceUnavailable, desc: "signing keys of the zone are unavailable"},
		},
		{
			name: "a token over 8 KiB is refused before it is decoded",
			token: func(t *testing.T, f *fixture) string {
				c := map[string]any{"iss": testIssuer, "aud": testResource, "pad": strings.Repeat("x", mandate.MaxTokenSize)}
				return rawToken(t, map[string]any{"alg": "ES256", "typ": mandate.TypResource, "kid": f.signer.KID()}, c, func([]byte) []byte { return make([]byte, 64) })
			},
			want: refused("exceeds 8192 bytes"),
		},
	}
}

// setUp builds the fixture, the verifier and the token of a case.
func (tc requestCase) setUp(t *testing.T) (*fixture, *Verifier, string) {
	t.Helper()
	f := newFixture(t)
	v := f.verifier(t, func(o *Options) {
		if tc.opts != nil {
			tc.opts(t, f, o)
		}
	})
	if tc.prepare != nil {
		tc.prepare(f)
	}
	token := f.token(t, nil)
	if tc.token != nil {
		token = tc.token(t, f)
	}
	return f, v, token
}

func (tc requestCase) newRequest(token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://api.example/v1/things", nil)
	if tc.request != nil {
		tc.request(r, token)
	} else {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

func TestVerifyAnswersEveryRequest(t *testing.T) {
	for _, tc := range requestCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, v, token := tc.setUp(t)
			c, err := func() (*mandate.Claims, error) {
				tok, err := BearerToken(tc.newRequest(token))
				if err != nil {
					return nil, err
				}
				return v.Verify(context.Background(), tok)
			}()
			checkError(t, err, tc.want)
			if tc.want.status == http.StatusOK && (c == nil || c.Audience != testResource || c.ZoneID != testZone) {
				t.Fatalf("accepted with claims %+v", c)
			}
		})
	}
}

func TestMiddlewareAnswersEveryRequest(t *testing.T) {
	for _, tc := range requestCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, v, token := tc.setUp(t)
			rec, claims, called := serve(v, tc.newRequest(token))
			checkResponse(t, rec, tc.want, token)
			if called != (tc.want.status == http.StatusOK) {
				t.Fatalf("next handler called: %v, want %v", called, !called)
			}
			if called && (claims == nil || claims.SID == "") {
				t.Fatalf("next handler saw claims %+v", claims)
			}
		})
	}
}

// serve sends r through the verifier's middleware to a handler that records whether it
// ran and the claims it found in the context.
func serve(v *Verifier, r *http.Request) (rec *httptest.ResponseRecorder, claims *mandate.Claims, called bool) {
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		claims, _ = ClaimsFromContext(r.Context())
		_, _ = w.Write([]byte("protected content"))
	}))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec, claims, called
}

func checkError(t *testing.T, err error, want answer) {
	t.Helper()
	if want.status == http.StatusOK {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want a *verify.Error", err, err)
	}
	if e.Status != want.status || e.Code != want.code || e.Scope != want.scope {
		t.Errorf("got status %d code %q scope %q, want %d %q %q", e.Status, e.Code, e.Scope, want.status, want.code, want.scope)
	}
	if !strings.Contains(e.Description, want.desc) {
		t.Errorf("description %q does not mention %q", e.Description, want.desc)
	}
}

func checkResponse(t *testing.T, rec *httptest.ResponseRecorder, want answer, token string) {
	t.Helper()
	res := rec.Result()
	body := rec.Body.String()
	if res.StatusCode != want.status {
		t.Fatalf("status %d (%q), want %d", res.StatusCode, body, want.status)
	}
	if want.status == http.StatusOK {
		return
	}
	if strings.Contains(body, token) {
		t.Errorf("the body quotes the token: %q", body)
	}
	if got := res.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	if !strings.Contains(body, want.desc) {
		t.Errorf("body %q does not mention %q", body, want.desc)
	}
	challenges := res.Header.Values("WWW-Authenticate")
	if want.status == http.StatusServiceUnavailable {
		if len(challenges) != 0 {
			t.Errorf("503 carries a challenge %q", challenges)
		}
		if res.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		return
	}
	if len(challenges) != 1 {
		t.Fatalf("got %d WWW-Authenticate headers, want 1", len(challenges))
	}
	if strings.Contains(challenges[0], token) {
		t.Errorf("the challenge quotes the token: %q", challenges[0])
	}
	attrs := parseChallenge(t, challenges[0])
	wantAttrs := []string{"realm"}
	if attrs["realm"] != testRealm {
		t.Errorf("realm %q, want %q", attrs["realm"], testRealm)
	}
	if want.code != "" {
		wantAttrs = append(wantAttrs, "error", "error_description")
		if attrs["error"] != want.code {
			t.Errorf("error %q, want %q", attrs["error"], want.code)
		}
		if !strings.Contains(attrs["error_description"], want.desc) {
			t.Errorf("error_description %q does not mention %q", attrs["error_description"], want.desc)
		}
	}
	if want.scope != "" {
		wantAttrs = append(wantAttrs, "scope")
		if attrs["scope"] != want.scope {
			t.Errorf("scope %q, want %q", attrs["scope"], want.scope)
		}
	}
	var got []string
	for name := range attrs {
		got = append(got, name)
	}
	slices.Sort(got)
	slices.Sort(wantAttrs)
	if !slices.Equal(got, wantAttrs) {
		t.Errorf("challenge %q has attributes %v, want %v", challenges[0], got, wantAttrs)
	}
}

func TestRevocationAfterCachingIsEnforced(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(f *fixture)
	}{
		{"the session is revoked after the mandate was cached", func(f *fixture) { f.revokeSession(testZone, "sid-3") }},
		{"the root session is revoked after the mandate was cached", func(f *fixture) { f.revokeSession(testZone, "sid-1") }},
		{"the delegation edge is revoked after the mandate was cached", func(f *fixture) { f.revokeEdge(testZone, "edge-2") }},
		{"an edge of the path is revoked after the mandate was cached", func(f *fixture) { f.revokeEdge(testZone, "edge-1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			v := f.verifier(t, nil)
			token := f.sign(t, f.delegatedClaims())
			first, err := v.Verify(context.Background(), token)
			if err != nil {
				t.Fatal(err)
			}
			second, err := v.Verify(context.Background(), token)
			if err != nil {
				t.Fatal(err)
			}
			// The cache hands out the claims it stored: the same pointer proves the second
			// answer came from it, so the refusal below cannot be a fresh verification.
			if first != second {
				t.Fatal("the second verification did not come from the cache")
			}
			tc.revoke(f)
			_, err = v.Verify(context.Background(), token)
			checkError(t, err, refused("revoked"))
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			rec, _, called := serve(v, r)
			if called {
				t.Fatal("the middleware passed a revoked mandate")
			}
			checkResponse(t, rec, refused("revoked"), token)
		})
	}
}

func TestCachedMandateStillExpires(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	token := f.token(t, nil)
	if _, err := v.Verify(context.Background(), token); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(300*time.Second + mandate.DefaultLeeway)
	_, err := v.Verify(context.Background(), token)
	checkError(t, err, refused("token expired"))
}

func TestWatchFiresWhenAnAnchorIsRevoked(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revoke func(f *fixture)
		fires  bool
	}{
		{"a revoked session fires the watch", func(f *fixture) { f.revokeSession(testZone, "sid-3") }, true},
		{"a revoked root session fires the watch", func(f *fixture) { f.revokeSession(testZone, "sid-1") }, true},
		{"a revoked delegation edge fires the watch", func(f *fixture) { f.revokeEdge(testZone, "edge-2") }, true},
		{"a revoked edge of the path fires the watch", func(f *fixture) { f.revokeEdge(testZone, "edge-1") }, true},
		{"an unrelated session does not fire the watch", func(f *fixture) { f.revokeSession(testZone, "sid-9") }, false},
		{"the same session in another zone does not fire the watch", func(f *fixture) { f.revokeSession(otherZone, "sid-3") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			v := f.verifier(t, nil)
			c, err := v.Verify(context.Background(), f.sign(t, f.delegatedClaims()))
			if err != nil {
				t.Fatal(err)
			}
			ch, release := v.Watch(c)
			defer release()
			if isClosed(ch) {
				t.Fatal("the watch fired before any revocation")
			}
			tc.revoke(f)
			// Store.Add closes the channel before it returns, so no waiting is needed.
			if got := isClosed(ch); got != tc.fires {
				t.Fatalf("watch fired: %v, want %v", got, tc.fires)
			}
			if got := v.Revoked(c); got != tc.fires {
				t.Fatalf("Revoked: %v, want %v", got, tc.fires)
			}
		})
	}
}

func TestWatchOfARevokedMandateFiresAtOnce(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	c, err := v.Verify(context.Background(), f.sign(t, f.delegatedClaims()))
	if err != nil {
		t.Fatal(err)
	}
	f.revokeEdge(testZone, "edge-1")
	ch, release := v.Watch(c)
	defer release()
	if !isClosed(ch) {
		t.Fatal("a watch on an already revoked anchor did not fire")
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestMiddlewareHandsTheClaimsToTheNextHandler(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	want := f.delegatedClaims()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer "+f.sign(t, want))
	rec, got, called := serve(v, r)
	if !called || rec.Code != http.StatusOK {
		t.Fatalf("status %d, next handler called: %v", rec.Code, called)
	}
	if rec.Body.String() != "protected content" {
		t.Fatalf("body %q", rec.Body.String())
	}
	if got.Subject != want.Subject || got.ClientID != want.ClientID || got.SID != want.SID ||
		got.Scope != want.Scope || !slices.Equal(got.DelegationPath, want.DelegationPath) || got.Act.Sub != "agent-3" {
		t.Fatalf("claims in the context: %+v, want %+v", got, want)
	}
}

func TestClaimsFromContextWithoutMiddlewareFindsNothing(t *testing.T) {
	if c, ok := ClaimsFromContext(context.Background()); ok || c != nil {
		t.Fatalf("got %+v, %v", c, ok)
	}
}

// TestBusCarriesRevocationsToTheVerifier runs the in-process transport end to end: the
// verifier's store is fed by a real Bus, signed entries published on it take effect on
// the next request, and forged ones are dropped.
func TestBusCarriesRevocationsToTheVerifier(t *testing.T) {
	f := newFixture(t)
	streamKey := []byte("a stream key of the deployment")
	bus := revocation.NewBus(0, f.clock.Now)
	src := bus.Attach(f.store, f.epochs, streamKey)
	t.Cleanup(func() { src.Close() })
	v := f.verifier(t, func(o *Options) {
		o.Source = src
		o.RejectStaleEpoch = true
	})
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	get := func(token string) int {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	publish := func(stream string, fields map[string]string, key []byte) {
		t.Helper()
		if key != nil {
			fields["sig"] = revocation.Sign(key, stream, fields)
		}
		if err := bus.Publish(context.Background(), stream, fields); err != nil {
			t.Fatal(err)
		}
	}
	now := f.clock.Now()
	direct := f.token(t, nil)
	delegated := f.sign(t, f.delegatedClaims())
	if got := get(direct); got != http.StatusServiceUnavailable {
		t.Fatalf("before any heartbeat: status %d, want 503", got)
	}
	hb := revocation.Heartbeat{Publisher: "relay-test", Watermark: now, SentAt: now}
	if err := bus.Publish(context.Background(), revocation.StreamSessionsRevoke, hb.SignedFields([]byte("a key the deployment does not use"))); err != nil {
		t.Fatal(err)
	}
	if got := get(direct); got != http.StatusServiceUnavailable {
		t.Fatalf("after a heartbeat signed with another key: status %d, want 503", got)
	}
	if err := bus.Publish(context.Background(), revocation.StreamSessionsRevoke, hb.SignedFields(streamKey)); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{direct, delegated} {
		if got := get(tok); got != http.StatusNoContent {
			t.Fatalf("before any event: status %d", got)
		}
	}

	forged := revocation.Event{ZoneID: testZone, SessionID: "sid-1", Reason: "forged", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}
	publish(revocation.StreamSessionsRevoke, forged.Fields(), []byte("a key the deployment does not use"))
	if got := get(direct); got != http.StatusNoContent {
		t.Fatalf("a revocation signed with another key took effect: status %d", got)
	}
	if s := src.Stats(); s.BadSignature != 2 || s.Heartbeats != 1 {
		t.Fatalf("stats %+v, want two bad signatures and a heartbeat", s)
	}

	publish(revocation.StreamDelegationInvalidate, revocation.EpochEvent{ZoneID: testZone, Epoch: 6, EdgeID: "edge-7", Event: "create"}.Fields(), streamKey)
	if got := get(delegated); got != http.StatusUnauthorized {
		t.Fatalf("a delegated mandate of an older epoch: status %d", got)
	}
	if got := get(direct); got != http.StatusNoContent {
		t.Fatalf("an epoch change refused an undelegated mandate: status %d", got)
	}

	ev := revocation.Event{ZoneID: testZone, SessionID: "sid-1", Reason: "admin", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}
	publish(revocation.StreamSessionsRevoke, ev.Fields(), streamKey)
	if got := get(direct); got != http.StatusUnauthorized {
		t.Fatalf("after the session was revoked on the bus: status %d", got)
	}
}

// TestVerifierFetchesTheZoneKeys leaves Keys nil, so the verifier discovers the zone's
// JWKS through RFC 8414 metadata on a loopback server, and follows a key rotation.
func TestVerifierFetchesTheZoneKeys(t *testing.T) {
	f := newFixture(t)
	ks := newKeyServer(t, &f.key.PublicKey)
	v := f.verifier(t, func(o *Options) {
		o.Issuer = ks.issuer
		o.Keys = nil
	})
	issued := func(s *mandate.Signer) string {
		c := f.resourceClaims()
		c.Issuer = ks.issuer
		return signWith(t, s, mandate.TypResource, c)
	}
	if _, err := v.Verify(context.Background(), issued(f.signer)); err != nil {
		t.Fatalf("a mandate signed with the published key: %v", err)
	}
	if ks.hits() != 1 {
		t.Fatalf("%d key set fetches, want 1", ks.hits())
	}

	newKey, rotated := newSigner(t)
	ks.setKeys(&f.key.PublicKey, &newKey.PublicKey)
	_, err := v.Verify(context.Background(), issued(rotated))
	checkError(t, err, refused("kid is not a signing key of the zone"))

	// A kid miss refetches at most once per minimum interval; once it has passed, the
	// rotated key is found.
	f.clock.Advance(mandate.DefaultRemoteMinRefresh + time.Second)
	if _, err := v.Verify(context.Background(), issued(rotated)); err != nil {
		t.Fatalf("a mandate signed with the rotated key: %v", err)
	}
	if ks.hits() != 2 {
		t.Fatalf("%d key set fetches, want 2", ks.hits())
	}
}

func TestVerifierRecoversWhenTheKeysBecomeAvailable(t *testing.T) {
	f := newFixture(t)
	ks := newKeyServer(t, &f.key.PublicKey)
	ks.setStatus(http.StatusInternalServerError)
	v := f.verifier(t, func(o *Options) {
		o.Issuer = ks.issuer
		o.Keys = nil
	})
	c := f.resourceClaims()
	c.Issuer = ks.issuer
	token := f.sign(t, c)
	_, err := v.Verify(context.Background(), token)
	checkError(t, err, answer{status: http.StatusServiceUnavailable, desc: "signing keys of the zone are unavailable"})

	ks.setStatus(http.StatusOK)
	f.clock.Advance(mandate.DefaultRemoteMinRefresh + time.Second)
	if _, err := v.Verify(context.Background(), token); err != nil {
		t.Fatalf("after the key server recovered: %v", err)
	}
}

func TestStaleAnswersSayWhy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		source   bool
		age      time.Duration // of the watermark; negative for none
		stats    revocation.Stats
		failOpen bool
		want     answer
	}{
		{name: "a verifier without a source is never stale", want: passes},
		{name: "a watermark within the bound passes", source: true, age: 5 * time.Second, stats: revocation.Stats{Synced: true}, want: passes},
		{name: "an old watermark answers 503 with its age", source: true, age: time.Minute, stats: revocation.Stats{Synced: true},
			want: answer{status: http.StatusServiceUnavailable, desc: "revocation state is stale: last watermark 60s old"}},
		{name: "a source never synced says so", source: true, age: -1,
			want: answer{status: http.StatusServiceUnavailable, desc: "revocation state is stale: never fetched from the transport"}},
		{name: "a synced source without heartbeats names stream_key and the transport", source: true, age: -1, stats: revocation.Stats{Synced: true},
			want: answer{status: http.StatusServiceUnavailable, desc: "revocation state is stale: no heartbeat ever received; check stream_key and the transport"}},
		{name: "bad signatures are counted in the answer", source: true, age: -1, stats: revocation.Stats{Synced: true, BadSignature: 7},
			want: answer{status: http.StatusServiceUnavailable, desc: "revocation state is stale: no valid heartbeat ever received; 7 entries dropped for bad signatures, check stream_key"}},
		{name: "failing open passes a stale state", source: true, age: -1, failOpen: true, want: passes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			v := f.verifier(t, func(o *Options) {
				if tc.source {
					src := newWatermarkSource()
					src.setStats(tc.stats)
					if tc.age >= 0 {
						src.set(f.clock.Now().Add(-tc.age))
					}
					o.Source = src
				}
				o.FailOpen = tc.failOpen
			})
			_, err := v.Verify(context.Background(), f.token(t, nil))
			checkError(t, err, tc.want)
			if tc.want.status == http.StatusServiceUnavailable {
				rec := httptest.NewRecorder()
				WriteError(rec, v.Realm(), err)
				if got := rec.Header().Get("Retry-After"); got != "2" {
					t.Fatalf("Retry-After = %q", got)
				}
			}
		})
	}
}

func TestMaxStalenessIsConfigurable(t *testing.T) {
	f := newFixture(t)
	src := newWatermarkSource()
	src.set(f.clock.Now().Add(-time.Minute))
	v := f.verifier(t, func(o *Options) {
		o.Source = src
		o.MaxStaleness = 2 * time.Minute
	})
	if _, err := v.Verify(context.Background(), f.token(t, nil)); err != nil {
		t.Fatalf("a minute-old state under a two-minute bound: %v", err)
	}
	f.clock.Advance(90 * time.Second)
	_, err := v.Verify(context.Background(), f.token(t, nil))
	checkError(t, err, answer{status: http.StatusServiceUnavailable, desc: "revocation state is stale"})
}

func TestZoneFromIssuer(t *testing.T) {
	good := []struct{ issuer, zone string }{
		{"https://sts.example/zones/zone-a", "zone-a"},
		{"https://localhost:8443/zones/demo", "demo"},
		{"https://sts.example/caracal/zones/demo", "demo"},
		{"https://sts.example/zones/zones/demo", "demo"},
		{"http://127.0.0.1:9000/zones/a.b_c-1", "a.b_c-1"},
		{"https://sts.example/zones/" + strings.Repeat("z", 63), strings.Repeat("z", 63)},
	}
	for _, tc := range good {
		t.Run("accepts "+tc.issuer, func(t *testing.T) {
			got, err := ZoneFromIssuer(tc.issuer)
			if err != nil || got != tc.zone {
				t.Fatalf("got %q, %v; want %q", got, err, tc.zone)
			}
		})
	}
	bad := []struct{ why, issuer string }{
		{"an empty issuer", ""},
		{"a relative URL", "/zones/demo"},
		{"a URL without a host", "https:///zones/demo"},
		{"an unparsable URL", "https://sts.example/zones/%zz"},
		{"an issuer without a zones segment", "https://sts.example/demo"},
		{"an empty zone", "https://sts.example/zones/"},
		{"a trailing slash", "https://sts.example/zones/demo/"},
		{"a path below the zone", "https://sts.example/zones/demo/jwks.json"},
		{"an upper-case zone id", "https://sts.example/zones/Demo"},
		{"a zone id starting with a dot", "https://sts.example/zones/.demo"},
		{"a zone id of 64 characters", "https://sts.example/zones/" + strings.Repeat("z", 64)},
		{"a percent-encoded zone id", "https://sts.example/zones/de%6Do"},
		{"an encoded slash in the zone id", "https://sts.example/zones/a%2Fb"},
		{"a query string", "https://sts.example/zones/demo?x=1"},
		{"an empty query string", "https://sts.example/zones/demo?"},
		{"a fragment", "https://sts.example/zones/demo#top"},
		{"user info", "https://admin@sts.example/zones/demo"},
	}
	for _, tc := range bad {
		t.Run("rejects "+tc.why, func(t *testing.T) {
			if got, err := ZoneFromIssuer(tc.issuer); err == nil {
				t.Fatalf("%q gave zone %q", tc.issuer, got)
			}
		})
	}
}

func TestNewRejectsIncompleteOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"an issuer that is not a zone issuer is rejected", func(o *Options) { o.Issuer = "https://sts.example/demo" }, "zones"},
		{"a missing resource identifier is rejected", func(o *Options) { o.Resource = "" }, "resource identifier"},
		{"a missing revocation store is rejected", func(o *Options) { o.Revocations = nil }, "revocation store"},
		{"rejecting stale epochs without an epoch tracker is rejected", func(o *Options) { o.RejectStaleEpoch, o.Epochs = true, nil }, "epoch tracker"},
		{"an empty required scope is rejected", func(o *Options) { o.Scopes = []string{"read", ""} }, "required scope"},
		{"two scopes written as one are rejected", func(o *Options) { o.Scopes = []string{"read write"} }, "white space"},
		{"a leeway beyond the revocation grace is rejected", func(o *Options) { o.Leeway = revocation.ExpiryGrace + time.Second }, "leeway"},
		{"remote keys of a plain-http non-loopback issuer are rejected", func(o *Options) { o.Keys, o.Issuer = nil, "http://sts.example/zones/demo" }, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := newFixture(t).options()
			tc.change(&opts)
			v, err := New(opts)
			if err == nil {
				t.Fatalf("New accepted the options: %+v", v)
			}
			if !strings.HasPrefix(err.Error(), "verify: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestVerifierAccessors(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, func(o *Options) { o.Realm = "" })
	if v.ZoneID() != testZone {
		t.Errorf("ZoneID() = %q", v.ZoneID())
	}
	if v.Realm() != testResource {
		t.Errorf("Realm() = %q, want the resource identifier", v.Realm())
	}
}
