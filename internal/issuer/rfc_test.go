package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

const tokenPath = "/zones/demo/oauth2/token"

// credentials is a client_credentials form for client of zone demo, by client_secret_post.
func credentials(client string, extra ...string) url.Values {
	v := url.Values{"grant_type": {GrantClientCreds}, "client_id": {client}, "client_secret": {"demo-" + client + "-secret"}}
	for i := 0; i+1 < len(extra); i += 2 {
		v[extra[i]] = append(v[extra[i]], extra[i+1])
	}
	return v
}

func metadataOf(t *testing.T, e *env, zone string) map[string]any {
	t.Helper()
	rec := e.do(call{method: http.MethodGet, path: "/.well-known/oauth-authorization-server/zones/" + zone})
	var md map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &md) != nil {
		t.Fatalf("metadata of %s: %d %s", zone, rec.Code, rec.Body)
	}
	return md
}

func stringList(t *testing.T, v any, what string) []string {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("%s = %#v, want a JSON array", what, v)
	}
	out := make([]string, len(list))
	for i, x := range list {
		out[i], _ = x.(string)
	}
	return out
}

// RFC 7591 section 2 "none" and RFC 6749 section 5.2: a client_id without a secret
// identifies the client; at token exchange it must be the subject token's client.
func TestRFC6749_5_2_NoneClientIdentificationAtTokenExchange(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		subject := e.session("demo", "agent")
		t.Run("the subject token's own client_id is accepted", func(t *testing.T) {
			rec := e.do(call{path: tokenPath, form: exchangeForm(subject, "client_id", "agent")})
			if rec.Code != http.StatusOK {
				t.Fatalf("exchange with client_id only: %d %s", rec.Code, rec.Body)
			}
			if c := claimsOf(t, tokenBody(t, rec.Body.Bytes()).AccessToken); c.ClientID != "agent" || c.Audience != apiResource {
				t.Fatalf("claims %+v", c)
			}
		})
		t.Run("another client_id is invalid_client, 401", func(t *testing.T) {
			oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject, "client_id", "reader")}), http.StatusUnauthorized, CodeInvalidClient)
		})
		t.Run("an unknown client_id is invalid_client, 401", func(t *testing.T) {
			oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject, "client_id", "ghost")}), http.StatusUnauthorized, CodeInvalidClient)
		})
		t.Run("an authenticated client that is not the token's stays invalid_grant", func(t *testing.T) {
			oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject), basic: [2]string{"reader", "demo-reader-secret"}}), http.StatusBadRequest, CodeInvalidGrant)
		})
		t.Run("client_secret without client_id is invalid_request", func(t *testing.T) {
			oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject, "client_secret", "demo-agent-secret")}), http.StatusBadRequest, CodeInvalidRequest)
		})
	})
}

// RFC 6749 section 5.2: client_credentials without a secret is invalid_client (401), not
// a malformed request; the client_id alone authenticates nothing.
func TestRFC6749_5_2_ClientIDAloneIsInvalidClient(t *testing.T) {
	e := newEnv(t, nil)
	writes := e.store.writes.Load()
	rec := e.do(call{path: tokenPath, form: url.Values{"grant_type": {GrantClientCreds}, "client_id": {"agent"}}})
	oauthErr(t, rec, http.StatusUnauthorized, CodeInvalidClient)
	if rec.Header().Get("WWW-Authenticate") == "" {
		t.Fatal("a 401 invalid_client carries a challenge")
	}
	if e.store.writes.Load() != writes {
		t.Fatal("a refused client_credentials request created a session")
	}
}

// RFC 7009 section 2.1 with the "none" method: a client_id without a secret at the
// revocation endpoint identifies the client; it must be the token's client.
func TestRFC7009_2_1_NoneClientIdentificationAtRevocation(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		e := newEnv(t, open())
		subject := e.session("demo", "agent")
		oauthErr(t, e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {subject}, "client_id": {"reader"}}}), http.StatusUnauthorized, CodeInvalidClient)
		if rec := e.do(call{path: tokenPath, form: exchangeForm(subject)}); rec.Code != http.StatusOK {
			t.Fatalf("the refused revocation revoked the session: exchange %d %s", rec.Code, rec.Body)
		}
		if rec := e.do(call{path: "/zones/demo/oauth2/revoke", form: url.Values{"token": {subject}, "client_id": {"agent"}}}); rec.Code != http.StatusOK {
			t.Fatalf("revocation with the token's client_id: %d %s", rec.Code, rec.Body)
		}
		oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject)}), http.StatusBadRequest, CodeInvalidGrant)
	})
}

// RFC 8414 section 2: response_types_supported is REQUIRED. Caracal supports no response
// type, and its authorization endpoint (required by client libraries) says so.
func TestRFC8414_ResponseTypesSupported(t *testing.T) {
	e := newEnv(t, nil)
	md := metadataOf(t, e, "demo")
	if got := stringList(t, md["response_types_supported"], "response_types_supported"); len(got) != 0 {
		t.Fatalf("response_types_supported = %v; Caracal supports no response type", got)
	}
	iss := testBase + "/zones/demo"
	if md["authorization_endpoint"] != iss+"/oauth2/authorize" {
		t.Fatalf("authorization_endpoint = %v", md["authorization_endpoint"])
	}
	if got := stringList(t, md["grant_types_supported"], "grant_types_supported"); slices.Contains(got, "authorization_code") || slices.Contains(got, "implicit") {
		t.Fatalf("grant_types_supported = %v advertises a grant of the authorization endpoint", got)
	}
}

// RFC 6749 section 4.1.2.1: every response type is unsupported_response_type, answered
// directly (no registered redirect URI exists, so nothing is redirected).
func TestRFC6749_4_1_2_1_AuthorizeAnswersUnsupportedResponseType(t *testing.T) {
	e := newEnv(t, nil)
	q := url.Values{"response_type": {"code"}, "client_id": {"agent"}, "redirect_uri": {"https://attacker.test/cb"}, "state": {"s"}}
	for _, c := range []call{
		{method: http.MethodGet, path: "/zones/demo/oauth2/authorize?" + q.Encode()},
		{method: http.MethodPost, path: "/zones/demo/oauth2/authorize", form: q},
		{method: http.MethodGet, path: "/zones/demo/oauth2/authorize"},
	} {
		rec := e.do(c)
		oauthErr(t, rec, http.StatusBadRequest, CodeUnsupportedResponseType)
		if loc := rec.Header().Get("Location"); loc != "" {
			t.Fatalf("%s %s redirected to %q", c.method, c.path, loc)
		}
	}
	oauthErr(t, e.do(call{method: http.MethodGet, path: "/zones/nowhere/oauth2/authorize"}), http.StatusNotFound, CodeNotFound)
	if rec := e.do(call{method: http.MethodDelete, path: "/zones/demo/oauth2/authorize"}); rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") == "" {
		t.Fatalf("DELETE on the authorization endpoint: %d Allow=%q", rec.Code, rec.Header().Get("Allow"))
	}
}

// RFC 8414 section 2: scopes_supported (RECOMMENDED) is the union of the scopes of the
// zone's unarchived resources, as of the zone state (at most the refresh interval old), so
// that the public metadata never costs a storage query of its own.
func TestRFC8414_ScopesSupported(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		st := open()
		e := newEnv(t, st)
		if got := stringList(t, metadataOf(t, e, "demo")["scopes_supported"], "scopes_supported"); !slices.Equal(got, []string{"admin", "read", "send", "write"}) {
			t.Fatalf("scopes_supported = %v", got)
		}
		if err := st.PutResource(context.Background(), store.Resource{ZoneID: "demo", ID: "r1", Identifier: mailResource, Scopes: []string{"send"}, Archived: true}); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(DefaultRefreshInterval)
		if got := stringList(t, metadataOf(t, e, "demo")["scopes_supported"], "scopes_supported"); !slices.Equal(got, []string{"admin", "read", "write"}) {
			t.Fatalf("scopes_supported after archiving the mail resource = %v", got)
		}
	})
}

// RFC 8707 section 2 and RFC 6749 section 4.4: client_credentials with resource issues a
// resource mandate for it in one step, gated by the policy (action client_credentials),
// under a new session that revocation reaches as any other.
func TestRFC8707_ClientCredentialsWithResource(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() store.Store) {
		st := open()
		e := newEnv(t, st)
		t.Run("a resource mandate for the resource, with the granted scopes", func(t *testing.T) {
			rec := e.do(call{path: tokenPath, form: credentials("agent", "resource", apiResource)})
			if rec.Code != http.StatusOK {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			tr := tokenBody(t, rec.Body.Bytes())
			c := claimsOf(t, tr.AccessToken)
			if c.Audience != apiResource || c.Use != mandate.UseResource || c.Scope != "read write" || tr.Scope != "read write" {
				t.Fatalf("claims %+v, response scope %q", c, tr.Scope)
			}
			if headerOf(t, tr.AccessToken)["typ"] != mandate.TypResource {
				t.Fatalf("typ = %v", headerOf(t, tr.AccessToken)["typ"])
			}
			if tr.ExpiresIn != int64(DefaultMandateLifetime.Seconds()) || c.Expiry-c.IssuedAt != tr.ExpiresIn {
				t.Fatalf("expires_in %d, exp-iat %d", tr.ExpiresIn, c.Expiry-c.IssuedAt)
			}
			sess, err := st.GetSession(context.Background(), "demo", c.SID)
			if err != nil || sess.ClientID != "agent" || sess.Status != store.StatusActive || c.RootSID != c.SID {
				t.Fatalf("session %+v %v, claims sid %s root_sid %s", sess, err, c.SID, c.RootSID)
			}
			rev, err := st.RevokeSession(context.Background(), "demo", c.SID, "test", e.clock.Now())
			if err != nil || rev.Session == nil {
				t.Fatalf("the mandate's session cannot be revoked: %+v %v", rev, err)
			}
		})
		t.Run("scope narrows as in the exchange", func(t *testing.T) {
			rec := e.do(call{path: tokenPath, form: credentials("agent", "resource", apiResource, "scope", "read")})
			if rec.Code != http.StatusOK {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if c := claimsOf(t, tokenBody(t, rec.Body.Bytes()).AccessToken); c.Scope != "read" {
				t.Fatalf("scope %q", c.Scope)
			}
			oauthErr(t, e.do(call{path: tokenPath, form: credentials("agent", "resource", apiResource, "scope", "delete")}), http.StatusBadRequest, CodeInvalidScope)
		})
		t.Run("refusals create no session", func(t *testing.T) {
			writes := e.store.writes.Load()
			oauthErr(t, e.do(call{path: tokenPath, form: credentials("agent", "resource", mailResource)}), http.StatusForbidden, CodeAccessDenied)
			oauthErr(t, e.do(call{path: tokenPath, form: credentials("agent", "resource", "https://unknown.test")}), http.StatusBadRequest, CodeInvalidTarget)
			oauthErr(t, e.do(call{path: tokenPath, form: credentials("agent", "resource", apiResource, "resource", mailResource)}), http.StatusBadRequest, CodeInvalidTarget)
			oauthErr(t, e.do(call{path: tokenPath, form: credentials("agent", "resource", apiResource, "scope", "admin")}), http.StatusForbidden, CodeAccessDenied)
			if e.store.writes.Load() != writes {
				t.Fatal("a refused client_credentials request wrote to the store")
			}
		})
		t.Run("scope without resource is invalid_scope", func(t *testing.T) {
			oauthErr(t, e.do(call{path: tokenPath, form: credentials("agent", "scope", "read")}), http.StatusBadRequest, CodeInvalidScope)
		})
		t.Run("without resource it stays the session grant", func(t *testing.T) {
			rec := e.do(call{path: tokenPath, form: credentials("agent")})
			if c := claimsOf(t, tokenBody(t, rec.Body.Bytes()).AccessToken); rec.Code != http.StatusOK || c.Use != mandate.UseSession || c.Audience != testBase+"/zones/demo" {
				t.Fatalf("%d %+v", rec.Code, c)
			}
		})
	})
}

// The policy sees action "client_credentials" for the one-step grant and
// "token_exchange" for an exchange, so a bundle can tell them apart.
func TestRFC8707_ClientCredentialsPolicyAction(t *testing.T) {
	e := newEnv(t, nil)
	b, err := e.store.PutPolicyBundle(context.Background(), "demo", map[string]string{"p.rego": `package caracal.authz
decision := {"decision": "allow", "evaluation_status": "complete"} if input.action == "client_credentials"
else := {"decision": "deny", "evaluation_status": "complete", "reasons": [input.action]}`}, json.RawMessage(`{}`), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	installPolicy(t, e.svc, b)
	if rec := e.do(call{path: tokenPath, form: credentials("agent", "resource", apiResource)}); rec.Code != http.StatusOK {
		t.Fatalf("client_credentials under a bundle allowing only that action: %d %s", rec.Code, rec.Body)
	}
	body := oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(e.session("demo", "agent"))}), http.StatusForbidden, CodeAccessDenied)
	if body["error_description"] != "policy denied: token_exchange" {
		t.Fatalf("the exchange's policy action = %q", body["error_description"])
	}
}

// RFC 8693 section 2.2.2: an audience that names no target of this STS (here: anything
// but the requested resource) is invalid_target.
func TestRFC8693_2_2_2_UnknownAudienceIsInvalidTarget(t *testing.T) {
	e := newEnv(t, nil)
	subject := e.session("demo", "agent")
	oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject, "audience", "https://unknown.test")}), http.StatusBadRequest, CodeInvalidTarget)
	oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject, "audience", mailResource)}), http.StatusBadRequest, CodeInvalidTarget)
	oauthErr(t, e.do(call{path: tokenPath, form: exchangeForm(subject, "audience", "")}), http.StatusBadRequest, CodeInvalidRequest)
	if rec := e.do(call{path: tokenPath, form: exchangeForm(subject, "audience", apiResource)}); rec.Code != http.StatusOK {
		t.Fatalf("audience equal to the resource: %d %s", rec.Code, rec.Body)
	}
}

// RFC 2045 section 5.1 (via RFC 6749 appendix B): media type parameter values such as
// the charset are case-insensitive.
func TestRFC2045_CharsetIsCaseInsensitive(t *testing.T) {
	e := newEnv(t, nil)
	for _, cs := range []string{"utf-8", "UTF-8", "Utf-8", `"uTf-8"`} {
		rec := e.do(call{path: tokenPath, form: credentials("agent"), contentType: "application/x-www-form-urlencoded; charset=" + cs})
		if rec.Code != http.StatusOK {
			t.Fatalf("charset=%s: %d %s", cs, rec.Code, rec.Body)
		}
	}
	oauthErr(t, e.do(call{path: tokenPath, form: credentials("agent"), contentType: "application/x-www-form-urlencoded; charset=latin1"}), http.StatusBadRequest, CodeInvalidRequest)
}

// Exchange is the same check in process as over HTTP, and its errors are *Error.
func TestExchangeInProcess(t *testing.T) {
	e := newEnv(t, nil)
	subject := e.session("demo", "agent")
	issued, err := e.svc.Exchange(context.Background(), ExchangeRequest{ZoneID: "demo", SubjectToken: subject, SubjectTokenType: TokenTypeAccessToken, Resources: []string{apiResource}, Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	if c := claimsOf(t, issued.Token); c.Scope != "read" || issued.Scope != "read" || issued.Expires.Unix() != c.Expiry {
		t.Fatalf("issued %+v, claims %+v", issued, c)
	}
	_, err = e.svc.Exchange(context.Background(), ExchangeRequest{ZoneID: "demo", SubjectToken: subject, SubjectTokenType: TokenTypeAccessToken, Resources: []string{mailResource}})
	var oe *Error
	if !errors.As(err, &oe) || oe.Status != http.StatusForbidden || oe.Code != CodeAccessDenied {
		t.Fatalf("err = %v", err)
	}
	_, err = e.svc.Exchange(context.Background(), ExchangeRequest{ZoneID: "demo", SubjectToken: subject, SubjectTokenType: TokenTypeAccessToken, Resources: []string{apiResource}, Client: ClientAuth{ID: "reader"}})
	if !errors.As(err, &oe) || oe.Status != http.StatusUnauthorized || oe.Code != CodeInvalidClient {
		t.Fatalf("err = %v", err)
	}
}
