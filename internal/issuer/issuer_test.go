package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

func tokenBody(t *testing.T, b []byte) tokenResponse {
	t.Helper()
	var tr tokenResponse
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatalf("token response is not JSON: %q", b)
	}
	return tr
}

// claimsOf decodes a token's payload without verifying it (the verification itself is
// tested through the endpoints).
func claimsOf(t testing.TB, tok string) mandate.Claims {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c mandate.Claims
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func headerOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestClientCredentialsIssuesASessionMandate(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		for _, style := range []string{"basic", "post"} {
			t.Run("with client_secret_"+style, func(t *testing.T) {
				c := call{path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds}}}
				if style == "basic" {
					c.basic = [2]string{"agent", "demo-agent-secret"}
				} else {
					c.form.Set("client_id", "agent")
					c.form.Set("client_secret", "demo-agent-secret")
				}
				rec := e.do(c)
				if rec.Code != http.StatusOK {
					t.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				if rec.Header().Get("Cache-Control") != "no-store" {
					t.Fatal("token response must not be cached")
				}
				tr := tokenBody(t, rec.Body.Bytes())
				if tr.TokenType != "Bearer" || tr.IssuedTokenType != TokenTypeAccessToken || tr.ExpiresIn != 3600 || tr.Scope != "" {
					t.Fatalf("unexpected response %+v", tr)
				}
				h := headerOf(t, tr.AccessToken)
				if h["alg"] != "ES256" || h["typ"] != mandate.TypSession || h["kid"] == "" || len(h) != 3 {
					t.Fatalf("header = %v", h)
				}
				c2 := claimsOf(t, tr.AccessToken)
				iss := testBase + "/zones/demo"
				if c2.Issuer != iss || c2.Audience != iss || c2.Subject != "agent" || c2.ClientID != "agent" || c2.ZoneID != "demo" ||
					c2.Use != mandate.UseSession || c2.SID == "" || c2.RootSID != c2.SID || c2.ID == "" || c2.Scope != "" ||
					c2.Expiry-c2.IssuedAt != 3600 || c2.NotBefore != c2.IssuedAt {
					t.Fatalf("claims = %+v", c2)
				}
				sess, err := e.store.GetSession(context.Background(), "demo", c2.SID)
				if err != nil || sess.Status != store.StatusActive || sess.ClientID != "agent" || sess.ExpiresAt.Unix() != c2.Expiry {
					t.Fatalf("stored session = %+v, %v", sess, err)
				}
			})
		}
	})
}

func TestExchangeIssuesANarrowedResourceMandate(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		subject := e.session("demo", "agent")
		sc := claimsOf(t, subject)

		t.Run("explicit scope is issued exactly", func(t *testing.T) {
			rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read")})
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			tr := tokenBody(t, rec.Body.Bytes())
			if tr.Scope != "read" || tr.ExpiresIn != 300 || tr.IssuedTokenType != TokenTypeAccessToken || tr.TokenType != "Bearer" {
				t.Fatalf("response %+v", tr)
			}
			if h := headerOf(t, tr.AccessToken); h["typ"] != mandate.TypResource {
				t.Fatalf("typ = %v", h["typ"])
			}
			c := claimsOf(t, tr.AccessToken)
			if c.Audience != apiResource || c.Use != mandate.UseResource || c.Scope != "read" || c.SID != sc.SID || c.RootSID != sc.SID ||
				c.Subject != "agent" || c.ClientID != "agent" || c.ZoneID != "demo" || c.Issuer != testBase+"/zones/demo" {
				t.Fatalf("claims %+v", c)
			}
			// The issued mandate verifies against the zone's published keys.
			ks := e.jwks(t, "demo")
			v := &mandate.Verifier{Keys: ks, Now: e.clock.Now}
			if _, err := v.Verify(context.Background(), tr.AccessToken, mandate.Expect{Issuer: c.Issuer, ZoneID: "demo", Audience: apiResource, Use: mandate.UseResource}); err != nil {
				t.Fatal(err)
			}
		})
		t.Run("absent scope means the declared scopes the policy grants", func(t *testing.T) {
			rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject)})
			tr := tokenBody(t, rec.Body.Bytes())
			if rec.Code != http.StatusOK || tr.Scope != "read write" {
				t.Fatalf("status %d scope %q: %s", rec.Code, tr.Scope, rec.Body)
			}
		})
		t.Run("lifetime never exceeds the session", func(t *testing.T) {
			e.clock.Advance(time.Hour - 2*time.Minute)
			rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read")})
			tr := tokenBody(t, rec.Body.Bytes())
			c := claimsOf(t, tr.AccessToken)
			if rec.Code != http.StatusOK || c.Expiry != sc.Expiry || tr.ExpiresIn != 120 {
				t.Fatalf("status %d exp %d (session %d) expires_in %d", rec.Code, c.Expiry, sc.Expiry, tr.ExpiresIn)
			}
		})
		t.Run("authenticated client must own the subject token", func(t *testing.T) {
			rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject), basic: [2]string{"reader", "demo-reader-secret"}})
			oauthErr(t, rec, http.StatusBadRequest, CodeInvalidGrant)
			rec = e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read"), basic: [2]string{"agent", "demo-agent-secret"}})
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		})
	})
}

func (e *env) jwks(t *testing.T, zone string) mandate.KeySet {
	t.Helper()
	rec := e.do(call{method: http.MethodGet, path: "/zones/" + zone + "/jwks.json"})
	if rec.Code != http.StatusOK {
		t.Fatalf("jwks: %d %s", rec.Code, rec.Body)
	}
	if cc := rec.Header().Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") {
		t.Fatalf("jwks Cache-Control = %q", cc)
	}
	ks, err := mandate.ParseJWKS(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// forge signs arbitrary claims and header type with the zone's real active key.
func (e *env) forge(t *testing.T, zone, typ string, edit func(*mandate.Claims)) string {
	t.Helper()
	z, err := e.svc.zone(context.Background(), zone)
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now().Unix()
	iss := testBase + "/zones/" + zone
	c := &mandate.Claims{Issuer: iss, Subject: "agent", Audience: iss, Expiry: now + 600, IssuedAt: now, NotBefore: now, ID: "j",
		ZoneID: zone, ClientID: "agent", Use: mandate.UseSession}
	edit(c)
	if (typ == mandate.TypSession) == (c.Use == mandate.UseSession) {
		tok, err := z.sign(typ, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// The signer refuses a typ that contradicts use; sign such a token by hand.
	keys, err := e.store.SigningKeys(context.Background(), zone, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	priv, err := openKey(e.svc.opts.KEK, zone, keys[0].Sealed)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": keys[0].KID, "typ": typ})
	body, _ := json.Marshal(c)
	in := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body)
	digest := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// hs256 builds a token whose HMAC key is the zone's public JWK: the classic algorithm
// confusion attack.
func hs256(t *testing.T, kid string, pubJWK []byte, claims mandate.Claims) string {
	t.Helper()
	hdr, _ := json.Marshal(map[string]string{"alg": "HS256", "kid": kid, "typ": mandate.TypSession})
	body, _ := json.Marshal(claims)
	in := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, pubJWK)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestExchangeRefusesBadSubjectTokens(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		good := e.session("demo", "agent")
		gc := claimsOf(t, good)
		otherZone := e.session("other", "agent")
		keys, err := e.store.SigningKeys(context.Background(), "demo", e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		hdr := headerOf(t, good)
		noneTok := func() string {
			h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"session+jwt","kid":"` + hdr["kid"].(string) + `"}`))
			return h + "." + strings.Split(good, ".")[1] + "."
		}()
		withSID := func(c *mandate.Claims) { c.SID, c.RootSID = gc.SID, gc.SID }
		now := e.clock.Now().Unix()

		cases := []struct {
			name  string
			token string
		}{
			{"alg none", noneTok},
			{"HS256 keyed with the public key", hs256(t, hdr["kid"].(string), keys[0].PublicJWK, gc)},
			{"unknown kid", func() string {
				p := strings.SplitN(good, ".", 2)
				h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"nope","typ":"session+jwt"}`))
				return h + "." + p[1]
			}()},
			{"a session mandate of another zone", otherZone},
			{"expired", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { withSID(c); c.Expiry = now - 3600 })},
			{"not yet valid", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { withSID(c); c.NotBefore = now + 3600 })},
			{"wrong audience", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { withSID(c); c.Audience = apiResource })},
			{"wrong issuer", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { withSID(c); c.Issuer = "https://evil.test/zones/demo" })},
			{"wrong use", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { withSID(c); c.Use = mandate.UseResource })},
			{"resource mandate as subject", e.forge(t, "demo", mandate.TypResource, func(c *mandate.Claims) { withSID(c); c.Use = mandate.UseResource })},
			{"zone claim of another zone", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { withSID(c); c.ZoneID = "other" })},
			{"unknown session", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { c.SID, c.RootSID = "nosuch", "nosuch" })},
			{"session of another client", e.forge(t, "demo", mandate.TypSession, func(c *mandate.Claims) { withSID(c); c.ClientID, c.Subject = "reader", "reader" })},
			{"tampered payload", func() string {
				p := strings.Split(good, ".")
				c := gc
				c.ClientID = "reader"
				b, _ := json.Marshal(c)
				return p[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + p[2]
			}()},
			{"garbage", "not.a.jwt"},
			{"oversized", strings.Repeat("a", 9000)},
		}
		for _, tc := range cases {
			t.Run(tc.name+" is invalid_grant", func(t *testing.T) {
				before := e.store.writes.Load()
				rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(tc.token)})
				oauthErr(t, rec, http.StatusBadRequest, CodeInvalidGrant)
				if e.store.writes.Load() != before {
					t.Fatal("a refused exchange wrote to storage")
				}
			})
		}

		t.Run("a revoked session cannot exchange", func(t *testing.T) {
			tok := e.session("demo", "agent")
			rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {tok}}})
			if rec.Code != http.StatusOK {
				t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
			}
			sess, _ := e.store.GetSession(context.Background(), "demo", claimsOf(t, tok).SID)
			if sess.Status != store.StatusRevoked {
				t.Fatalf("session status %q after revoke", sess.Status)
			}
			body := oauthErr(t, e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(tok)}), http.StatusBadRequest, CodeInvalidGrant)
			if !strings.Contains(body["error_description"], "revoked") {
				t.Fatalf("description %q does not say revoked", body["error_description"])
			}
		})
	})
}

func TestTokenEndpointRefusesMalformedRequests(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		subject := e.session("demo", "agent")
		cc := url.Values{"grant_type": {GrantClientCreds}}
		basic := [2]string{"agent", "demo-agent-secret"}
		cases := []struct {
			name   string
			c      call
			status int
			code   string
		}{
			{"query string on POST", call{path: "/zones/demo/oauth2/token?grant_type=client_credentials", form: cc, basic: basic}, 400, CodeInvalidRequest},
			{"wrong content type", call{path: "/zones/demo/oauth2/token", rawBody: cc.Encode(), contentType: "application/json", basic: basic}, 400, CodeInvalidRequest},
			{"missing content type", call{path: "/zones/demo/oauth2/token", rawBody: cc.Encode(), contentType: "-", basic: basic}, 400, CodeInvalidRequest},
			{"oversized body", call{path: "/zones/demo/oauth2/token", rawBody: cc.Encode() + "&pad=" + strings.Repeat("x", 70000), basic: basic}, 400, CodeInvalidRequest},
			{"malformed body", call{path: "/zones/demo/oauth2/token", rawBody: "grant_type=%zz", basic: basic}, 400, CodeInvalidRequest},
			{"missing grant_type", call{path: "/zones/demo/oauth2/token", form: url.Values{}, basic: basic}, 400, CodeInvalidRequest},
			{"repeated grant_type", call{path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds, GrantClientCreds}}, basic: basic}, 400, CodeInvalidRequest},
			{"unsupported grant", call{path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {"password"}}, basic: basic}, 400, CodeUnsupportedGrantType},
			{"no client authentication", call{path: "/zones/demo/oauth2/token", form: cc}, 401, CodeInvalidClient},
			{"wrong secret (basic)", call{path: "/zones/demo/oauth2/token", form: cc, basic: [2]string{"agent", "wrong"}}, 401, CodeInvalidClient},
			{"client of another zone", call{path: "/zones/demo/oauth2/token", form: cc, basic: [2]string{"agent", "other-agent-secret"}}, 401, CodeInvalidClient},
			{"unknown client", call{path: "/zones/demo/oauth2/token", form: cc, basic: [2]string{"ghost", "x"}}, 401, CodeInvalidClient},
			{"both basic and post credentials", call{path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds}, "client_id": {"agent"}, "client_secret": {"demo-agent-secret"}}, basic: basic}, 400, CodeInvalidRequest},
			{"client_secret without client_id", call{path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantClientCreds}, "client_secret": {"demo-agent-secret"}}}, 400, CodeInvalidRequest},
			{"missing subject_token", call{path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantTokenExchange}, "subject_token_type": {TokenTypeAccessToken}, "resource": {apiResource}}}, 400, CodeInvalidRequest},
			{"missing subject_token_type", call{path: "/zones/demo/oauth2/token", form: url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {subject}, "resource": {apiResource}}}, 400, CodeInvalidRequest},
			{"wrong subject_token_type", call{path: "/zones/demo/oauth2/token", form: func() url.Values {
				v := exchangeForm(subject)
				v.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
				return v
			}()}, 400, CodeInvalidRequest},
			{"missing resource", call{path: "/zones/demo/oauth2/token", form: func() url.Values { v := exchangeForm(subject); v.Del("resource"); return v }()}, 400, CodeInvalidRequest},
			{"two resources", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "resource", mailResource)}, 400, CodeInvalidTarget},
			{"repeated scope", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read", "scope", "write")}, 400, CodeInvalidRequest},
			{"empty scope", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", " ")}, 400, CodeInvalidRequest},
			{"actor token", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "actor_token", subject, "actor_token_type", TokenTypeAccessToken)}, 400, CodeInvalidRequest},
			{"unknown delegation edge", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "delegation_edge_id", "e1")}, 403, CodeAccessDenied},
			{"empty delegation edge", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "delegation_edge_id", "")}, 400, CodeInvalidRequest},
			{"unknown resource", call{path: "/zones/demo/oauth2/token", form: func() url.Values { v := exchangeForm(subject); v.Set("resource", "https://nope.test"); return v }()}, 400, CodeInvalidTarget},
			{"scope outside the declared scopes", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "read delete")}, 400, CodeInvalidScope},
			{"declared scope the policy does not grant", call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "admin")}, 403, CodeAccessDenied},
			{"resource without any grant", call{path: "/zones/demo/oauth2/token", form: func() url.Values { v := exchangeForm(subject); v.Set("resource", mailResource); return v }()}, 403, CodeAccessDenied},
			{"unknown zone", call{path: "/zones/nowhere/oauth2/token", form: cc, basic: basic}, 404, CodeNotFound},
			{"invalid zone id", call{path: "/zones/NOT_A_ZONE/oauth2/token", form: cc, basic: basic}, 404, CodeNotFound},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := e.store.writes.Load()
				rec := e.do(tc.c)
				oauthErr(t, rec, tc.status, tc.code)
				if e.store.writes.Load() != before {
					t.Fatal("a refused request wrote to storage")
				}
				if tc.code == CodeInvalidClient && tc.c.basic[0] != "" && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic ") {
					t.Fatal("invalid_client after Basic authentication must carry a Basic challenge")
				}
			})
		}
	})
}

func TestScopeNarrowingByPolicy(t *testing.T) {
	e := newEnv(t, nil)
	subject := e.session("demo", "reader")
	t.Run("absent scope yields only the granted scopes", func(t *testing.T) {
		rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject)})
		if tr := tokenBody(t, rec.Body.Bytes()); rec.Code != 200 || tr.Scope != "read" {
			t.Fatalf("%d %s", rec.Code, rec.Body)
		}
	})
	t.Run("escalation beyond the grant is refused", func(t *testing.T) {
		oauthErr(t, e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(subject, "scope", "write")}), 403, CodeAccessDenied)
	})
}

func TestFailedAuthenticationsAreThrottled(t *testing.T) {
	e := newEnv(t, nil, func(o *Options) { o.FailureLimit = 3 })
	cc := url.Values{"grant_type": {GrantClientCreds}}
	for range 3 {
		oauthErr(t, e.do(call{path: "/zones/demo/oauth2/token", form: cc, basic: [2]string{"agent", "wrong"}}), 401, CodeInvalidClient)
	}
	rec := e.do(call{path: "/zones/demo/oauth2/token", form: cc, basic: [2]string{"agent", "demo-agent-secret"}})
	oauthErr(t, rec, http.StatusTooManyRequests, CodeSlowDown)
	if rec.Header().Get("Retry-After") == "" {
		t.Fatal("slow_down without Retry-After")
	}
	// Other clients are unaffected; the throttled one recovers after the window.
	if rec := e.do(call{path: "/zones/demo/oauth2/token", form: cc, basic: [2]string{"reader", "demo-reader-secret"}}); rec.Code != 200 {
		t.Fatalf("reader: %d", rec.Code)
	}
	e.clock.Advance(DefaultFailureWindow)
	if rec := e.do(call{path: "/zones/demo/oauth2/token", form: cc, basic: [2]string{"agent", "demo-agent-secret"}}); rec.Code != 200 {
		t.Fatalf("after the window: %d %s", rec.Code, rec.Body)
	}
}

func TestJWKSAndMetadata(t *testing.T) {
	e := newEnv(t, nil)
	ks := e.jwks(t, "demo")
	if len(ks) != 1 {
		t.Fatalf("jwks has %d keys", len(ks))
	}
	for _, path := range []string{"/.well-known/oauth-authorization-server/zones/demo", "/zones/demo/.well-known/oauth-authorization-server"} {
		rec := e.do(call{method: http.MethodGet, path: path})
		var md map[string]any
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &md) != nil {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		iss := testBase + "/zones/demo"
		if md["issuer"] != iss || md["token_endpoint"] != iss+"/oauth2/token" || md["jwks_uri"] != iss+"/jwks.json" || md["revocation_endpoint"] != iss+"/oauth2/revoke" {
			t.Fatalf("metadata %v", md)
		}
	}
	if rec := e.do(call{method: http.MethodGet, path: "/zones/nowhere/jwks.json"}); rec.Code != 404 {
		t.Fatalf("unknown zone jwks: %d", rec.Code)
	}
	if rec := e.do(call{method: http.MethodGet, path: "/zones/demo/oauth2/token"}); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET on the token endpoint: %d", rec.Code)
	}
}

func TestKeyRotationKeepsRetiredKeysUntilTheirMandatesExpire(t *testing.T) {
	e := newEnv(t, nil)
	old := e.session("demo", "agent")
	oldKID := headerOf(t, old)["kid"]
	rot, err := e.svc.RotateKey(context.Background(), "demo", false)
	if err != nil {
		t.Fatal(err)
	}
	kid := rot.KID
	if kid == oldKID {
		t.Fatal("rotation kept the kid")
	}
	if want := e.clock.Now().Add(DefaultKeyActivationDelay); !rot.ActivatesAt.Equal(want) {
		t.Fatalf("activates at %s, want %s", rot.ActivatesAt, want)
	}
	ks := e.jwks(t, "demo")
	if len(ks) != 2 || ks[kid] == nil || ks[oldKID.(string)] == nil {
		t.Fatalf("jwks after rotation: %v", ks)
	}
	// Until the activation the old key signs; the new one is only published.
	rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(old, "scope", "read")})
	if rec.Code != 200 {
		t.Fatalf("exchange during the activation delay: %d %s", rec.Code, rec.Body)
	}
	if got := headerOf(t, tokenBody(t, rec.Body.Bytes()).AccessToken)["kid"]; got != oldKID {
		t.Fatalf("mandate during the activation delay signed with %v, want the old key %v", got, oldKID)
	}
	if _, err := e.svc.RotateKey(context.Background(), "demo", false); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second rotation while one is pending: %v, want a conflict", err)
	}
	// After it, a session mandate signed by the retired key still exchanges, and the new
	// mandate uses the new key, without waiting for the zone's refresh interval.
	e.clock.Advance(DefaultKeyActivationDelay)
	rec = e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(old, "scope", "read")})
	if rec.Code != 200 {
		t.Fatalf("exchange with a retired-key subject: %d %s", rec.Code, rec.Body)
	}
	if got := headerOf(t, tokenBody(t, rec.Body.Bytes()).AccessToken)["kid"]; got != kid {
		t.Fatalf("new mandate signed with %v, want %v", got, kid)
	}
	e.clock.Advance(e.svc.KeyRetention() + time.Second)
	e.svc.Invalidate("demo")
	if ks := e.jwks(t, "demo"); len(ks) != 1 || ks[kid] == nil {
		t.Fatalf("retired key still published after its retention: %v", ks)
	}
}

func TestImmediateKeyRotationRevokesTheSigningKey(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		old := e.session("demo", "agent")
		oldKID := headerOf(t, old)["kid"].(string)
		pending, err := e.svc.RotateKey(context.Background(), "demo", false)
		if err != nil {
			t.Fatal(err)
		}
		rot, err := e.svc.RotateKey(context.Background(), "demo", true)
		if err != nil {
			t.Fatal(err)
		}
		if !rot.ActivatesAt.Equal(e.clock.Now()) || len(rot.Revoked) != 2 || rot.Revoked[0] != oldKID || rot.Revoked[1] != pending.KID {
			t.Fatalf("immediate rotation = %+v; want it active now, revoking %s and the pending %s", rot, oldKID, pending.KID)
		}
		if ks := e.jwks(t, "demo"); len(ks) != 1 || ks[rot.KID] == nil {
			t.Fatalf("jwks after the immediate rotation: %v, want only %s", ks, rot.KID)
		}
		// The session mandate signed by the revoked key no longer exchanges.
		if rec := e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(old, "scope", "read")}); rec.Code == 200 {
			t.Fatalf("a mandate of the revoked key exchanged: %s", rec.Body)
		}
		fresh := e.session("demo", "agent")
		if got := headerOf(t, fresh)["kid"]; got != rot.KID {
			t.Fatalf("new session signed with %v, want %v", got, rot.KID)
		}
		rows, err := e.store.PendingOutbox(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		var events []string
		for _, r := range rows {
			if r.Stream == revocation.StreamKeys {
				ev, err := revocation.ParseKeysEvent(r.Fields)
				if err != nil {
					t.Fatalf("outbox keys row %v: %v", r.Fields, err)
				}
				events = append(events, ev.Event+":"+ev.KID)
			}
		}
		want := []string{"rotate:" + pending.KID, "revoke:" + rot.KID}
		if !slices.Equal(events, want) {
			t.Fatalf("keys entries in the outbox %v, want %v", events, want)
		}
	})
}

func TestRevocationEndpoint(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		t.Run("invalid tokens are answered 200 and change nothing", func(t *testing.T) {
			before := e.store.writes.Load()
			rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {"garbage"}}})
			if rec.Code != 200 || e.store.writes.Load() != before {
				t.Fatalf("%d, writes %d->%d", rec.Code, before, e.store.writes.Load())
			}
		})
		t.Run("a session of another zone is not revoked", func(t *testing.T) {
			tok := e.session("other", "agent")
			rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {tok}}})
			sess, _ := e.store.GetSession(context.Background(), "other", claimsOf(t, tok).SID)
			if rec.Code != 200 || sess.Status != store.StatusActive {
				t.Fatalf("%d, session %s", rec.Code, sess.Status)
			}
		})
		t.Run("a resource mandate is an unsupported token type", func(t *testing.T) {
			sub := e.session("demo", "agent")
			res := tokenBody(t, e.do(call{path: "/zones/demo/oauth2/token", form: exchangeForm(sub, "scope", "read")}).Body.Bytes()).AccessToken
			oauthErr(t, e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {res}}}), 400, CodeUnsupportedTokenType)
		})
		t.Run("authenticated client must own the token", func(t *testing.T) {
			tok := e.session("demo", "agent")
			oauthErr(t, e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {tok}}, basic: [2]string{"reader", "demo-reader-secret"}}), 400, CodeInvalidRequest)
		})
		t.Run("missing token", func(t *testing.T) {
			oauthErr(t, e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{}}), 400, CodeInvalidRequest)
		})
		t.Run("RFC 7009 2.1: token_type_hint is only a hint", func(t *testing.T) {
			for _, hint := range []string{"access_token", "refresh_token", "no-such-type"} {
				tok := e.session("demo", "agent")
				rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {tok}, "token_type_hint": {hint}}})
				sess, err := e.store.GetSession(context.Background(), "demo", claimsOf(t, tok).SID)
				if err != nil {
					t.Fatal(err)
				}
				if rec.Code != 200 || sess.Status != store.StatusRevoked {
					t.Fatalf("hint %q: %d, session %s; want 200 and revoked", hint, rec.Code, sess.Status)
				}
			}
		})
		t.Run("revocation writes the outbox entry", func(t *testing.T) {
			tok := e.session("demo", "agent")
			sid := claimsOf(t, tok).SID
			if rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {tok}}}); rec.Code != 200 {
				t.Fatal(rec.Code)
			}
			pending, err := e.store.PendingOutbox(context.Background(), 100)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, ev := range pending {
				if ev.Stream == revocation.StreamSessionsRevoke && ev.Fields["session_id"] == sid && ev.Fields["zone_id"] == "demo" {
					found = true
				}
			}
			if !found {
				t.Fatalf("no outbox entry for session %s in %+v", sid, pending)
			}
		})
	})
}
