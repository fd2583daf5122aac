package control

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
)

func TestCreateZone(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		var z zoneResponse
		decodeOK(t, e.do(http.MethodPost, "/v1/zones", bootstrapToken, `{"id":"acme.prod","name":"Acme production"}`), http.StatusCreated, &z)
		if z != (zoneResponse{ID: "acme.prod", Name: "Acme production"}) {
			t.Fatalf("zone = %+v", z)
		}
		stored, err := st.GetZone(context.Background(), "acme.prod")
		if err != nil || stored.Name != "Acme production" || stored.Epoch != 0 {
			t.Fatalf("stored zone %+v, %v", stored, err)
		}
		// The STS serves the zone's first key at once.
		rec := httptest.NewRecorder()
		e.sts.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, testBase+"/zones/acme.prod/jwks.json", nil))
		var jwks struct {
			Keys []struct {
				KID string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &jwks); rec.Code != http.StatusOK || err != nil || len(jwks.Keys) != 1 {
			t.Fatalf("jwks: %d %s", rec.Code, rec.Body)
		}
		if a := e.audit("acme.prod"); len(a) != 1 || a[0].Action != "zone.create" || a[0].Actor != bootstrapActor || a[0].Subject != "acme.prod" {
			t.Fatalf("audit = %+v", a)
		}

		apiErr(t, e.do(http.MethodPost, "/v1/zones", bootstrapToken, `{"id":"acme.prod","name":"again"}`), http.StatusConflict, codeConflict)
		for _, body := range []string{`{"id":"Acme","name":"x"}`, `{"id":"-acme","name":"x"}`, `{"id":"","name":"x"}`, `{"id":"ok","name":""}`, `{"id":"ok","name":"a\u0007b"}`} {
			wantRule(t, e.do(http.MethodPost, "/v1/zones", bootstrapToken, body), "")
		}
		if zones, _ := st.ListZones(context.Background()); len(zones) != 1 {
			t.Fatalf("zones = %+v", zones)
		}
	})
}

func TestAdminTokens(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedZone("a")
		e.seedZone("b")

		var resp adminTokenResponse
		decodeOK(t, e.do(http.MethodPost, "/v1/admin-tokens", bootstrapToken, `{"zone_id":"a","capability":"write"}`), http.StatusCreated, &resp)
		if !strings.HasPrefix(resp.Token, adminTokenPrefix) || len(resp.Token) < 40 || !strings.HasPrefix(resp.ID, adminTokenIDPrefix) ||
			resp.ZoneID == nil || *resp.ZoneID != "a" || resp.Capability != "write" {
			t.Fatalf("token = %+v", resp)
		}
		hash := sha256.Sum256([]byte(resp.Token))
		stored, err := st.AdminTokenByHash(context.Background(), hash[:])
		if err != nil || stored.ID != resp.ID || stored.ZoneID != "a" || stored.Capability != "write" {
			t.Fatalf("stored token %+v, %v", stored, err)
		}

		t.Run("a zone token administers its own zone", func(t *testing.T) {
			var r resourceResponse
			decodeOK(t, e.do(http.MethodPost, "/v1/zones/a/resources", resp.Token, `{"identifier":"https://files.test","scopes":["get","put"]}`), http.StatusCreated, &r)
			if a := e.audit("a"); a[0].Action != "resource.create" || a[0].Actor != resp.ID {
				t.Fatalf("audit = %+v", a[0])
			}
			apiErr(t, e.do(http.MethodPost, "/v1/zones/b/resources", resp.Token, `{"identifier":"https://files.test","scopes":["get"]}`), http.StatusForbidden, codeZoneForbidden)
		})
		t.Run("a global token has a null zone", func(t *testing.T) {
			var g adminTokenResponse
			decodeOK(t, e.do(http.MethodPost, "/v1/admin-tokens", bootstrapToken, `{"capability":"read"}`), http.StatusCreated, &g)
			if g.ZoneID != nil || g.Capability != "read" {
				t.Fatalf("token = %+v", g)
			}
			var ep epochResponse
			decodeOK(t, e.do(http.MethodGet, "/v1/zones/b/epoch", g.Token, ""), http.StatusOK, &ep)
		})
		t.Run("bad requests", func(t *testing.T) {
			wantRule(t, e.do(http.MethodPost, "/v1/admin-tokens", bootstrapToken, `{"zone_id":"a","capability":"admin"}`), "capability")
			wantRule(t, e.do(http.MethodPost, "/v1/admin-tokens", bootstrapToken, `{"zone_id":"A!","capability":"read"}`), "zone_id")
			apiErr(t, e.do(http.MethodPost, "/v1/admin-tokens", bootstrapToken, `{"zone_id":"nowhere","capability":"read"}`), http.StatusNotFound, codeNotFound)
		})
		t.Run("a revoked token is refused from then on", func(t *testing.T) {
			var rv adminTokenRevoked
			decodeOK(t, e.do(http.MethodPost, "/v1/admin-tokens/"+resp.ID+"/revoke", bootstrapToken, ""), http.StatusOK, &rv)
			if rv != (adminTokenRevoked{ID: resp.ID, Status: store.StatusRevoked}) {
				t.Fatalf("revocation = %+v", rv)
			}
			if desc := apiErr(t, e.do(http.MethodGet, "/v1/zones/a/epoch", resp.Token, ""), http.StatusUnauthorized, codeInvalidToken); desc != "admin token revoked" {
				t.Fatalf("description %q", desc)
			}
			decodeOK(t, e.do(http.MethodPost, "/v1/admin-tokens/"+resp.ID+"/revoke", bootstrapToken, ""), http.StatusOK, &rv)
			if a := e.audit(""); a[0].Action != "admin_token.revoke" || a[0].Subject != resp.ID {
				t.Fatalf("audit = %+v", a[0])
			}
			apiErr(t, e.do(http.MethodPost, "/v1/admin-tokens/adm_nobody/revoke", bootstrapToken, ""), http.StatusNotFound, codeNotFound)
		})
	})
}

func TestRegisterApplication(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedZone("a")
		var app applicationResponse
		decodeOK(t, e.do(http.MethodPost, "/v1/zones/a/applications", bootstrapToken, `{"client_id":"billing-agent","name":"Billing agent"}`), http.StatusCreated, &app)
		if app.ClientID != "billing-agent" || app.ZoneID != "a" || app.Name != "Billing agent" || len(app.ClientSecret) < 40 {
			t.Fatalf("application = %+v", app)
		}
		stored, err := st.GetApplication(context.Background(), "a", "billing-agent")
		if err != nil || !strings.HasPrefix(stored.SecretHash, "$argon2id$") || strings.Contains(stored.SecretHash, app.ClientSecret) {
			t.Fatalf("stored application %+v, %v", stored, err)
		}
		// The secret authenticates at the STS.
		form := url.Values{"grant_type": {issuer.GrantClientCreds}, "client_id": {app.ClientID}, "client_secret": {app.ClientSecret}}
		req := httptest.NewRequest(http.MethodPost, testBase+"/zones/a/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		e.sts.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("client_credentials with the returned secret: %d %s", rec.Code, rec.Body)
		}

		apiErr(t, e.do(http.MethodPost, "/v1/zones/a/applications", bootstrapToken, `{"client_id":"alice","name":"again"}`), http.StatusConflict, codeConflict)
		wantRule(t, e.do(http.MethodPost, "/v1/zones/a/applications", bootstrapToken, `{"client_id":"bad id","name":"x"}`), "client_id")
		wantRule(t, e.do(http.MethodPost, "/v1/zones/a/applications", bootstrapToken, `{"name":""}`), "name")
		if stored, _ := st.GetApplication(context.Background(), "a", "alice"); stored.Name != "alice" {
			t.Fatal("a conflicting registration replaced the application")
		}
	})
}

func TestGeneratedClientID(t *testing.T) {
	e := newEnv(t, memory.New())
	e.seedZone("a")
	var app applicationResponse
	decodeOK(t, e.do(http.MethodPost, "/v1/zones/a/applications", bootstrapToken, `{"name":"anonymous"}`), http.StatusCreated, &app)
	if !strings.HasPrefix(app.ClientID, clientIDPrefix) || !clientIDPattern.MatchString(app.ClientID) {
		t.Fatalf("client_id = %q", app.ClientID)
	}
	if _, err := e.st.GetApplication(context.Background(), "a", app.ClientID); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterResource(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedZone("a")
		var r resourceResponse
		decodeOK(t, e.do(http.MethodPost, "/v1/zones/a/resources", bootstrapToken, `{"identifier":"https://files.test/api","scopes":["get","put"]}`), http.StatusCreated, &r)
		if r.Identifier != "https://files.test/api" || r.ZoneID != "a" || r.Archived || len(r.Scopes) != 2 || !strings.HasPrefix(r.ID, store.ResourceIDPrefix) {
			t.Fatalf("resource = %+v", r)
		}
		stored, err := st.GetResource(context.Background(), "a", "https://files.test/api")
		if err != nil || stored.ID != r.ID {
			t.Fatalf("stored %+v, %v", stored, err)
		}
		// The STS knows the resource at once: the policy, not the resource lookup,
		// refuses alice (no grant on it).
		tok, _ := e.session("a", "alice")
		apiErr(t, e.exchange("a", tok, "https://files.test/api", "get"), http.StatusForbidden, "access_denied")

		apiErr(t, e.do(http.MethodPost, "/v1/zones/a/resources", bootstrapToken, `{"identifier":"https://files.test/api","scopes":["get"]}`), http.StatusConflict, codeConflict)
		for _, body := range []string{
			`{"identifier":"files.test","scopes":["get"]}`,
			`{"identifier":"https://files.test#x","scopes":["get"]}`,
			`{"identifier":"https://x.test","scopes":[]}`,
			`{"identifier":"https://x.test","scopes":["a","a"]}`,
			`{"identifier":"https://x.test","scopes":["a b"]}`,
			`{"identifier":"https://x.test/` + strings.Repeat("p", maxIdentifierLen) + `","scopes":["a"]}`,
		} {
			wantRule(t, e.do(http.MethodPost, "/v1/zones/a/resources", bootstrapToken, body), "")
		}
		if _, err := st.GetResource(context.Background(), "a", "https://x.test"); err == nil {
			t.Fatal("an invalid resource was stored")
		}
	})
}

func TestRotateKey(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedZone("a")
		tok, _ := e.session("a", "alice")
		before, err := st.SigningKeys(context.Background(), "a", e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		var rot rotateResponse
		decodeOK(t, e.do(http.MethodPost, "/v1/zones/a/keys/rotate", bootstrapToken, ""), http.StatusOK, &rot)
		after, err := st.SigningKeys(context.Background(), "a", e.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		if rot.KID == before[0].KID || len(after) != 2 || after[0].KID != rot.KID || after[1].KID != before[0].KID {
			t.Fatalf("rotated to %s; keys before %v after %v", rot.KID, before, after)
		}
		if rot.Immediate || rot.ActivatesAt != timestamp(e.clock.Now().Add(issuer.DefaultKeyActivationDelay)) || len(rot.Revoked) != 0 {
			t.Fatalf("delayed rotation answered %+v", rot)
		}
		var keys keysResponse
		apiErr(t, e.do(http.MethodGet, "/v1/zones/a/keys", tok, ""), http.StatusUnauthorized, codeInvalidToken)
		apiErr(t, e.do(http.MethodGet, "/v1/zones/nowhere/keys", bootstrapToken, ""), http.StatusNotFound, codeNotFound)
		decodeOK(t, e.do(http.MethodGet, "/v1/zones/a/keys", bootstrapToken, ""), http.StatusOK, &keys)
		if len(keys.Keys) != 2 || keys.Keys[0].KID != rot.KID || keys.Keys[0].State != "next" || keys.Keys[1].State != "signing" {
			t.Fatalf("keys during the activation delay: %+v", keys)
		}
		// A second delayed rotation waits for the first.
		apiErr(t, e.do(http.MethodPost, "/v1/zones/a/keys/rotate", bootstrapToken, "{}"), http.StatusConflict, codeConflict)
		// Until the activation, sessions are signed with the old key; then with the new one.
		early, _ := e.session("a", "bob")
		if kid := headerOf(t, early, "kid"); kid != before[0].KID {
			t.Fatalf("session during the activation delay signed with %s, want %s", kid, before[0].KID)
		}
		e.clock.Advance(issuer.DefaultKeyActivationDelay)
		// A session mandate signed with the retired key still works here.
		var ep epochResponse
		decodeOK(t, e.do(http.MethodGet, "/v1/zones/a/epoch", tok, ""), http.StatusOK, &ep)
		fresh, _ := e.session("a", "carol")
		if kid := headerOf(t, fresh, "kid"); kid != rot.KID {
			t.Fatalf("new session signed with %s, want %s", kid, rot.KID)
		}
		decodeOK(t, e.do(http.MethodGet, "/v1/zones/a/keys", bootstrapToken, ""), http.StatusOK, &keys)
		if len(keys.Keys) != 2 || keys.Keys[0].State != "signing" || keys.Keys[1].State != "retired" || keys.Keys[1].NotAfter == "" {
			t.Fatalf("keys after the activation: %+v", keys)
		}

		var imm rotateResponse
		decodeOK(t, e.do(http.MethodPost, "/v1/zones/a/keys/rotate?immediate=true", bootstrapToken, ""), http.StatusOK, &imm)
		if !imm.Immediate || imm.ActivatesAt != timestamp(e.clock.Now()) || len(imm.Revoked) != 1 || imm.Revoked[0] != rot.KID {
			t.Fatalf("immediate rotation answered %+v, want %s revoked", imm, rot.KID)
		}
		apiErr(t, e.do(http.MethodGet, "/v1/zones/a/epoch", fresh, ""), http.StatusUnauthorized, "invalid_token")
		decodeOK(t, e.do(http.MethodPost, "/v1/zones/a/keys/rotate", bootstrapToken, `{"immediate":true}`), http.StatusOK, &imm)
		if !imm.Immediate {
			t.Fatalf("body immediate ignored: %+v", imm)
		}
		wantRule(t, e.do(http.MethodPost, "/v1/zones/a/keys/rotate", bootstrapToken, `{"kid":"mine"}`), "unknown member")
		wantRule(t, e.do(http.MethodPost, "/v1/zones/a/keys/rotate?immediate=maybe", bootstrapToken, ""), "immediate")
	})
}

func headerOf(t *testing.T, token, name string) string {
	t.Helper()
	h := strings.Split(token, ".")[0]
	return claimOf(t, h+"."+h+".", name)
}
