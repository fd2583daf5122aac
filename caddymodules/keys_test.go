package caddymodules

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls" // the tls.ca_pool.source modules
	dto "github.com/prometheus/client_model/go"

	"github.com/caracalgw/caracal/internal/caddyrevocation"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
)

func TestCaddyfileReadsTrustPoolAndJWKSFile(t *testing.T) {
	h, err := parse(`caracal_mandate {
		issuer https://sts.test/zones/demo
		resource https://api.test/v1
		tls_trust_pool file /etc/caracal/root.crt
		jwks_file /etc/caracal/demo.jwks
	}`)
	if err != nil {
		t.Fatal(err)
	}
	if string(h.TrustPoolRaw) != `{"pem_files":["/etc/caracal/root.crt"],"provider":"file"}` || h.JWKSFile != "/etc/caracal/demo.jwks" {
		t.Fatalf("trust pool %s, jwks_file %q", h.TrustPoolRaw, h.JWKSFile)
	}
	for name, src := range map[string]string{
		"two trust pools":       "tls_trust_pool file a.crt\n tls_trust_pool file b.crt",
		"an unknown pool":       "tls_trust_pool nowhere",
		"a trust pool w/o kind": "tls_trust_pool",
		"jwks_file w/o a path":  "jwks_file",
	} {
		t.Run(name, func(t *testing.T) {
			if h, err := parse("caracal_mandate {\n issuer https://sts.test/zones/demo\n resource https://api.test/v1\n " + src + "\n}"); err == nil {
				t.Fatalf("parsed: %+v", h)
			}
		})
	}
}

// tlsKeyServer serves a zone's metadata and JWKS over HTTPS with a certificate of its
// own test CA, written as PEM to a file.
func tlsKeyServer(t *testing.T, keys ...*mandate.JWK) (issuer, caFile string) {
	t.Helper()
	mux := http.NewServeMux()
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	issuer = srv.URL + "/zones/demo"
	mux.HandleFunc("GET /.well-known/oauth-authorization-server/zones/demo", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": issuer, "jwks_uri": issuer + "/jwks.json"})
	})
	mux.HandleFunc("GET /zones/demo/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		doc := mandate.JWKS{}
		for _, k := range keys {
			doc.Keys = append(doc.Keys, *k)
		}
		_ = json.NewEncoder(w).Encode(doc)
	})
	caFile = filepath.Join(t.TempDir(), "root.crt")
	cert := srv.Certificate()
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return issuer, caFile
}

func newJWK(t *testing.T) (*mandate.JWK, string) {
	t.Helper()
	priv, err := mandate.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := mandate.PublicJWK(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &jwk, jwk.KID
}

// provisionRemote provisions a handler whose keys come from issuer, on a private local
// revocation pipeline.
func provisionRemote(t *testing.T, h *Handler) *mandate.RemoteKeys {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	h.Resource = testResource
	h.Revocation = caddyrevocation.Config{Transport: "local", StreamKey: "keys-test-stream-key-" + t.Name()}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	if h.remote == nil {
		t.Fatal("the handler fetches no remote keys")
	}
	return h.remote
}

func TestTrustPoolLetsTheGatewayFetchKeysFromAPrivateCA(t *testing.T) {
	jwk, kid := newJWK(t)
	issuer, caFile := tlsKeyServer(t, jwk)
	trust, err := json.Marshal(map[string]any{"provider": "file", "pem_files": []string{caFile}})
	if err != nil {
		t.Fatal(err)
	}
	rk := provisionRemote(t, &Handler{Issuer: issuer, TrustPoolRaw: trust})
	if _, err := rk.Key(context.Background(), kid); err != nil {
		t.Fatalf("key through the trust pool: %v", err)
	}

	// Without the pool the same server is refused, and the cause says why.
	plain := &Handler{Issuer: issuer}
	untrusted := provisionRemote(t, plain)
	err = untrusted.Refresh(context.Background())
	if mandate.FetchCause(err) != "x509" {
		t.Fatalf("fetch without the trust pool: %v (cause %q), want an x509 refusal", err, mandate.FetchCause(err))
	}
	var m dto.Metric
	if err := plain.metrics.keyFetches.WithLabelValues("x509").Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.GetCounter().GetValue() == 0 {
		t.Fatal("the refused fetch was not counted under outcome x509")
	}
}

func TestJWKSFileServesStaticKeys(t *testing.T) {
	jwk, kid := newJWK(t)
	doc, err := json.Marshal(mandate.JWKS{Keys: []mandate.JWK{*jwk}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "demo.jwks")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Issuer: "https://sts.test/zones/demo", Resource: testResource, JWKSFile: path}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if h.remote != nil {
		t.Fatal("a gateway with jwks_file fetches keys")
	}
	ks, err := h.remoteKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Key(context.Background(), kid); err != nil {
		t.Fatalf("key of the file: %v", err)
	}
	for name, bad := range map[string]*Handler{
		"a missing file":           {JWKSFile: filepath.Join(t.TempDir(), "none.jwks")},
		"a file with private keys": {JWKSFile: writeFile(t, `{"keys":[{"kty":"EC","d":"x"}]}`)},
		"a file and a trust pool":  {JWKSFile: path, TrustPoolRaw: json.RawMessage(`{"provider":"file"}`)},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			bad.Issuer, bad.Resource = "https://sts.test/zones/demo", testResource
			err := bad.Provision(ctx)
			_ = bad.Cleanup()
			if err == nil {
				t.Fatal("provisioned")
			}
		})
	}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKeysEntriesReachTheRemoteKeys(t *testing.T) {
	old, oldKID := newJWK(t)
	issuer, caFile := tlsKeyServer(t, old)
	trust, _ := json.Marshal(map[string]any{"provider": "file", "pem_files": []string{caFile}})
	h := &Handler{Issuer: issuer, TrustPoolRaw: trust}
	rk := provisionRemote(t, h)
	if _, err := rk.Key(context.Background(), oldKID); err != nil {
		t.Fatal(err)
	}
	// The handler subscribed its own key source; feed the zone's entry to it through the
	// pipeline, signed with the stream key as the relay does.
	ev := revocation.KeysEvent{ZoneID: "demo", Event: revocation.KeysRevoke, KID: "kid-new", ActivatesAt: time.Now(),
		Revoked: []string{oldKID}, ExpiresAt: time.Now().Add(time.Hour)}
	fields := ev.Fields()
	fields["sig"] = revocation.Sign(h.pipeline.Key, revocation.StreamKeys, fields)
	if err := h.pipeline.Publisher.Publish(context.Background(), revocation.StreamKeys, fields); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the revoked kid to be refused", func() bool {
		_, err := rk.Key(context.Background(), oldKID)
		return errors.Is(err, mandate.ErrUnknownKey)
	})
}
