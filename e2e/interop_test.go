package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The Node client package: unmodified oauth4webapi and jose from the npm registry,
// pinned by its package-lock.json.
const nodeClients = "testdata/node"

// minNodeMajor is the oldest Node.js release line that package.json's engines accepts.
const minNodeMajor = 20

// The demo zone's agent, as Caddyfile.example declares it.
const (
	demoClient = "demo-agent"
	demoSecret = "demo-secret-change-me"
)

// startDemo runs Caddyfile.example on the test's ports and returns the instance with the
// demo zone's issuer and protected resource on it.
func startDemo(t *testing.T) (in *instance, issuer, resource string) {
	t.Helper()
	in = start(t, demoCaddyfile(t, freePort(t)))
	return in, in.url("/zones/demo"), in.url("/api")
}

// nodeInstalled fails the test when node or npm is missing, and installs the pinned
// packages with `npm ci` when node_modules is absent (make test runs it beforehand).
func nodeInstalled(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the interop suite needs %s, which is not installed: run `make services` (it installs nodejs and npm)", tool)
		}
	}
	version, err := exec.Command("node", "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	var major int
	if _, err := fmt.Sscanf(string(version), "v%d.", &major); err != nil || major < minNodeMajor {
		t.Fatalf("node %s is too old: the pinned client libraries need Node.js %d or newer; `make services` installs it into scripts/node-runtime", strings.TrimSpace(string(version)), minNodeMajor)
	}
	if _, err := os.Stat(filepath.Join(nodeClients, "node_modules")); err == nil {
		return
	} else if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = nodeClients
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", nodeClients, err, out)
	}
}

// runNode runs a script of the Node client package against the instance and returns
// its standard output; the script trusts the instance's CA and nothing else is changed.
func runNode(t *testing.T, in *instance, script string, env ...string) []byte {
	t.Helper()
	return runNodePausing(t, in, script, nil, env...)
}

// runNodePausing is runNode for a script that, given CARACAL_PAUSE=1, writes the line
// "paused" to its standard error at the point where the test acts, and goes on once a
// line arrives on its standard input: pause runs in between. With pause nil the script
// runs straight through.
func runNodePausing(t *testing.T, in *instance, script string, pause func(), env ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = nodeClients
	root := filepath.Join(in.dir, "data", "caddy", "pki", "authorities", "local", "root.crt")
	cmd.Env = append(os.Environ(), append([]string{"NODE_EXTRA_CA_CERTS=" + root}, env...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	var stdin io.WriteCloser
	var errLines *bufio.Scanner
	if pause != nil {
		cmd.Env = append(cmd.Env, "CARACAL_PAUSE=1")
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		pipe, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		errLines = bufio.NewScanner(pipe)
	} else {
		cmd.Stderr = &stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node %s: %v", script, err)
	}
	if pause != nil {
		paused := false
		for !paused && errLines.Scan() {
			if paused = errLines.Text() == "paused"; !paused {
				fmt.Fprintln(&stderr, errLines.Text())
			}
		}
		if paused {
			pause()
			_, _ = io.WriteString(stdin, "go\n")
		}
		_ = stdin.Close()
		for errLines.Scan() {
			fmt.Fprintln(&stderr, errLines.Text())
		}
		if !paused {
			_ = cmd.Wait()
			t.Fatalf("node %s ended without pausing\nstdout:\n%s\nstderr:\n%s", script, &stdout, &stderr)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node %s: %v\nstdout:\n%s\nstderr:\n%s", script, err, &stdout, &stderr)
	}
	if stderr.Len() > 0 {
		t.Logf("node %s wrote to stderr:\n%s", script, &stderr)
	}
	return stdout.Bytes()
}

// nodeRefusal is how flow.mjs records a request the server was expected to refuse.
type nodeRefusal struct {
	Refused bool   `json:"refused"`
	Status  int    `json:"status"`
	Error   string `json:"error"`
	Scheme  string `json:"scheme"`
}

// nodeVerified is a mandate as jose verified it.
type nodeVerified struct {
	Alg             string `json:"alg"`
	Typ             string `json:"typ"`
	KidIsThumbprint bool   `json:"kid_is_thumbprint"`
	Claims          claims `json:"claims"`
}

// nodeFlow is the document flow.mjs prints.
type nodeFlow struct {
	Metadata struct {
		Issuer                string   `json:"issuer"`
		TokenEndpoint         string   `json:"token_endpoint"`
		RevocationEndpoint    string   `json:"revocation_endpoint"`
		JWKSURI               string   `json:"jwks_uri"`
		GrantTypes            []string `json:"grant_types_supported"`
		ResponseTypes         []string `json:"response_types_supported"`
		Scopes                []string `json:"scopes_supported"`
		RevocationAuthMethods []string `json:"revocation_endpoint_auth_methods_supported"`
	} `json:"metadata"`
	SessionBasic          nodeVerified `json:"session_basic"`
	SessionPost           nodeVerified `json:"session_post"`
	ClientCredentialsNone nodeRefusal  `json:"client_credentials_none"`
	ClientCredentialsRes  struct {
		TokenType string       `json:"token_type"`
		Scope     string       `json:"scope"`
		Mandate   nodeVerified `json:"mandate"`
	} `json:"client_credentials_resource"`
	Exchange struct {
		TokenType       string       `json:"token_type"`
		IssuedTokenType string       `json:"issued_token_type"`
		Scope           string       `json:"scope"`
		Mandate         nodeVerified `json:"mandate"`
	} `json:"exchange"`
	ExchangeOtherClient nodeRefusal `json:"exchange_other_client"`
	Call                struct {
		Status int       `json:"status"`
		Body   demoHello `json:"body"`
	} `json:"call"`
	Revoked             bool        `json:"revoked"`
	CallAfterRevoke     nodeRefusal `json:"call_after_revoke"`
	ExchangeAfterRevoke nodeRefusal `json:"exchange_after_revoke"`
	RevokeAsOtherClient nodeRefusal `json:"revoke_as_other_client"`
	PostSessionExchange nodeRefusal `json:"post_session_exchange"`
	PostSessionRevoked  nodeRefusal `json:"post_session_exchange_after_revoke"`
}

// TestInteropNodeOAuthFlow drives the demo with oauth4webapi and jose, unmodified:
// discovery, client_credentials (basic, post, none refused, with resource), token
// exchange with none identification, the gateway call, revocation with none
// identification (and with client_secret_basic and a refresh_token hint) and the
// refusals that follow.
func TestInteropNodeOAuthFlow(t *testing.T) {
	nodeInstalled(t)
	in, issuer, resource := startDemo(t)
	out := runNode(t, in, "flow.mjs",
		"CARACAL_ISSUER="+issuer, "CARACAL_RESOURCE="+resource,
		"CARACAL_CLIENT_ID="+demoClient, "CARACAL_CLIENT_SECRET="+demoSecret)
	var f nodeFlow
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("flow.mjs printed no JSON document: %v\n%s", err, out)
	}

	m := f.Metadata
	if m.Issuer != issuer || m.TokenEndpoint != issuer+"/oauth2/token" || m.RevocationEndpoint != issuer+"/oauth2/revoke" || m.JWKSURI != issuer+"/jwks.json" {
		t.Errorf("discovered metadata: %+v", m)
	}
	if !slices.Contains(m.GrantTypes, "client_credentials") || !slices.Contains(m.GrantTypes, "urn:ietf:params:oauth:grant-type:token-exchange") {
		t.Errorf("grant_types_supported %q", m.GrantTypes)
	}
	if m.ResponseTypes == nil || !slices.Equal(m.Scopes, []string{"read", "tool:delete", "tool:fetch", "tool:search", "write"}) || !slices.Contains(m.RevocationAuthMethods, "none") {
		t.Errorf("response_types_supported %q, scopes_supported %q, revocation auth methods %q", m.ResponseTypes, m.Scopes, m.RevocationAuthMethods)
	}

	for name, s := range map[string]nodeVerified{"basic": f.SessionBasic, "post": f.SessionPost} {
		if s.Alg != "ES256" || s.Typ != "session+jwt" || !s.KidIsThumbprint || s.Claims.Use != "session" || s.Claims.ClientID != demoClient || s.Claims.SID == "" {
			t.Errorf("session mandate (client_secret_%s): %+v", name, s)
		}
	}
	if f.SessionBasic.Claims.SID == f.SessionPost.Claims.SID {
		t.Errorf("two client_credentials grants share the session %q", f.SessionBasic.Claims.SID)
	}
	if c := f.ClientCredentialsNone; !c.Refused || c.Status != http.StatusUnauthorized || c.Error != "invalid_client" || c.Scheme != "basic" {
		t.Errorf("client_credentials with none: %+v, want 401 invalid_client with a Basic challenge", c)
	}

	checkResourceMandate := func(what string, v nodeVerified, scope string) {
		t.Helper()
		if v.Alg != "ES256" || v.Typ != "at+jwt" || !v.KidIsThumbprint || v.Claims.Use != "resource" || v.Claims.Audience != resource || v.Claims.Scope != "read" || v.Claims.ClientID != demoClient || scope != "read" {
			t.Errorf("%s: %+v (scope %q)", what, v, scope)
		}
	}
	cc := f.ClientCredentialsRes
	checkResourceMandate("client_credentials with resource", cc.Mandate, cc.Scope)
	if !strings.EqualFold(cc.TokenType, "bearer") {
		t.Errorf("client_credentials with resource: token_type %q", cc.TokenType)
	}
	ex := f.Exchange
	checkResourceMandate("token exchange with none", ex.Mandate, ex.Scope)
	if !strings.EqualFold(ex.TokenType, "bearer") || ex.IssuedTokenType != "urn:ietf:params:oauth:token-type:access_token" {
		t.Errorf("token exchange: token_type %q, issued_token_type %q", ex.TokenType, ex.IssuedTokenType)
	}
	if ex.Mandate.Claims.SID != f.SessionBasic.Claims.SID {
		t.Errorf("the exchanged mandate's sid %q is not its subject token's %q", ex.Mandate.Claims.SID, f.SessionBasic.Claims.SID)
	}
	if c := f.ExchangeOtherClient; !c.Refused || c.Status != http.StatusUnauthorized || c.Error != "invalid_client" {
		t.Errorf("token exchange identified as another client: %+v, want 401 invalid_client", c)
	}

	if f.Call.Status != http.StatusOK || f.Call.Body.Hello != demoClient || f.Call.Body.Caracal["sid"] != f.SessionBasic.Claims.SID {
		t.Errorf("gateway call: %+v", f.Call)
	}
	if !f.Revoked {
		t.Error("the revocation with none identification did not complete")
	}
	if c := f.CallAfterRevoke; !c.Refused || c.Status != http.StatusUnauthorized || c.Scheme != "bearer" || c.Error != "invalid_token" {
		t.Errorf("gateway call after revocation: %+v, want a 401 Bearer invalid_token challenge", c)
	}
	if c := f.ExchangeAfterRevoke; !c.Refused || c.Status != http.StatusBadRequest || c.Error != "invalid_grant" {
		t.Errorf("exchange of the revoked session: %+v, want 400 invalid_grant", c)
	}
	if c := f.RevokeAsOtherClient; !c.Refused || c.Status != http.StatusUnauthorized || c.Error != "invalid_client" {
		t.Errorf("revocation identified as another client of the zone: %+v, want 401 invalid_client", c)
	}
	if c := f.PostSessionExchange; c.Refused {
		t.Errorf("the other session was refused after the first was revoked: %+v", c)
	}
	if c := f.PostSessionRevoked; !c.Refused || c.Status != http.StatusBadRequest || c.Error != "invalid_grant" {
		t.Errorf("exchange of the session revoked with a refresh_token hint: %+v, want 400 invalid_grant", c)
	}
}

// TestInteropGoClientCredentials gets resource mandates with golang.org/x/oauth2's
// clientcredentials (resource through EndpointParams, both ways of sending the secret),
// verifies them with lestrrat-go/jwx against the zone's JWKS, checks that each kid is
// the RFC 7638 thumbprint of its key, and calls the gateway through the oauth2 client.
func TestInteropGoClientCredentials(t *testing.T) {
	in, issuer, resource := startDemo(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, in.client)

	keys, err := jwk.Fetch(ctx, issuer+"/jwks.json", jwk.WithHTTPClient(in.client))
	if err != nil {
		t.Fatal(err)
	}
	if keys.Len() == 0 {
		t.Fatal("the zone's JWKS is empty")
	}
	for i := range keys.Len() {
		key, _ := keys.Key(i)
		kid, _ := key.KeyID()
		tp, err := key.Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if want := base64.RawURLEncoding.EncodeToString(tp); kid != want {
			t.Errorf("kid %q is not the RFC 7638 thumbprint %q", kid, want)
		}
	}

	for _, style := range []struct {
		name  string
		style oauth2.AuthStyle
	}{{"client_secret_basic", oauth2.AuthStyleInHeader}, {"client_secret_post", oauth2.AuthStyleInParams}} {
		t.Run(style.name, func(t *testing.T) {
			cfg := clientcredentials.Config{
				ClientID:       demoClient,
				ClientSecret:   demoSecret,
				TokenURL:       issuer + "/oauth2/token",
				Scopes:         []string{"read"},
				EndpointParams: url.Values{"resource": {resource}},
				AuthStyle:      style.style,
			}
			tok, err := cfg.Token(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(tok.TokenType, "bearer") || tok.Expiry.IsZero() {
				t.Errorf("token type %q, expiry %v", tok.TokenType, tok.Expiry)
			}

			msg, err := jws.Parse([]byte(tok.AccessToken))
			if err != nil {
				t.Fatal(err)
			}
			h := msg.Signatures()[0].ProtectedHeaders()
			if typ, _ := h.Type(); typ != "at+jwt" {
				t.Errorf("typ %q, want at+jwt", typ)
			}
			if alg, _ := h.Algorithm(); alg != jwa.ES256() {
				t.Errorf("alg %v, want ES256", alg)
			}
			parsed, err := jwt.Parse([]byte(tok.AccessToken), jwt.WithKeySet(keys), jwt.WithIssuer(issuer), jwt.WithAudience(resource), jwt.WithValidate(true))
			if err != nil {
				t.Fatalf("jwx refuses the mandate: %v", err)
			}
			var scope, use string
			if err := parsed.Get("scope", &scope); err != nil || scope != "read" {
				t.Errorf("scope %q (%v)", scope, err)
			}
			if err := parsed.Get("use", &use); err != nil || use != "resource" {
				t.Errorf("use %q (%v)", use, err)
			}

			resp, err := cfg.Client(ctx).Get(resource + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var hello demoHello
			if err := json.NewDecoder(resp.Body).Decode(&hello); err != nil || resp.StatusCode != http.StatusOK || hello.Hello != demoClient {
				t.Errorf("gateway: %d %+v (%v)", resp.StatusCode, hello, err)
			}
		})
	}

	// A wrong secret is an *oauth2.RetrieveError carrying the RFC 6749 error.
	bad := clientcredentials.Config{ClientID: demoClient, ClientSecret: "wrong", TokenURL: issuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}
	_, err = bad.Token(ctx)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != http.StatusUnauthorized || re.ErrorCode != "invalid_client" {
		t.Errorf("wrong secret: %v, want 401 invalid_client", err)
	}
}
