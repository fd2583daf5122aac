package caddymodules

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/internal/caddyrev"
	"github.com/caracalgw/caracal/verify"
)

func parse(src string) (*Handler, error) {
	mh, err := parseCaddyfile(httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser(src)})
	if err != nil {
		return nil, err
	}
	return mh.(*Handler), nil
}

func TestCaddyfileReadsEveryOption(t *testing.T) {
	h, err := parse(`caracal_mandate {
		issuer https://sts.test/zones/demo
		resource https://api.test/v1
		scopes read write
		scopes admin
		revocation redis://127.0.0.1:6379/0 {
			stream_key {env.KEY}
			stream_prefix t1:
			retention 2h
		}
		max_staleness 20s
		on_stale allow
		check_bytes 8192
		leeway 5s
		forward_mandate off
		end_on_expiry off
		reject_stale_epoch
		exchange https://sts.test/zones/demo/oauth2/token {
			renew_before 10s
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"issuer":"https://sts.test/zones/demo","resource":"https://api.test/v1","scopes":["read","write","admin"],` +
		`"revocation":{"transport":"redis://127.0.0.1:6379/0","stream_key":"{env.KEY}","stream_prefix":"t1:","retention":7200000000000},` +
		`"max_staleness":20000000000,"on_stale":"allow","check_bytes":8192,"leeway":5000000000,"forward_mandate":false,` +
		`"reject_stale_epoch":true,"end_on_expiry":false,"exchange":{"token_endpoint":"https://sts.test/zones/demo/oauth2/token","renew_before":10000000000}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestCaddyfileDefaultsStayUnset(t *testing.T) {
	h, err := parse("caracal_mandate {\n issuer https://sts.test/zones/demo\n resource https://api.test/v1\n exchange\n}")
	if err != nil {
		t.Fatal(err)
	}
	if h.ForwardMandate != nil || h.EndOnExpiry != nil || h.CheckBytes != 0 || h.Exchange == nil || h.Exchange.TokenEndpoint != "" {
		t.Fatalf("defaults were filled in by the parser: %+v", h)
	}
}

func TestCaddyfileRefusesBadInput(t *testing.T) {
	const base = "issuer https://sts.test/zones/demo\n resource https://api.test/v1\n"
	cases := map[string]string{
		"an argument on the directive":       "caracal_mandate x {\n" + base + "}",
		"a missing issuer":                   "caracal_mandate {\n resource https://api.test/v1\n}",
		"a missing resource":                 "caracal_mandate {\n issuer https://sts.test/zones/demo\n}",
		"an unknown option":                  "caracal_mandate {\n" + base + " colour blue\n}",
		"two issuers on one line":            "caracal_mandate {\n issuer a b\n resource https://api.test/v1\n}",
		"scopes without a scope":             "caracal_mandate {\n" + base + " scopes\n}",
		"a bad duration":                     "caracal_mandate {\n" + base + " max_staleness soon\n}",
		"a bad leeway":                       "caracal_mandate {\n" + base + " leeway 1 2\n}",
		"an unknown on_stale":                "caracal_mandate {\n" + base + " on_stale maybe\n}",
		"a check_bytes that is no int":       "caracal_mandate {\n" + base + " check_bytes 4k\n}",
		"forward_mandate neither on nor off": "caracal_mandate {\n" + base + " forward_mandate yes\n}",
		"end_on_expiry without a value":      "caracal_mandate {\n" + base + " end_on_expiry\n}",
		"reject_stale_epoch with a value":    "caracal_mandate {\n" + base + " reject_stale_epoch on\n}",
		"exchange with two endpoints":        "caracal_mandate {\n" + base + " exchange a b\n}",
		"an unknown exchange option":         "caracal_mandate {\n" + base + " exchange {\n  cache 1\n }\n}",
		"a bad renew_before":                 "caracal_mandate {\n" + base + " exchange {\n  renew_before later\n }\n}",
		"an unknown revocation option":       "caracal_mandate {\n" + base + " revocation local {\n  colour blue\n }\n}",
		"a revocation without transport":     "caracal_mandate {\n" + base + " revocation\n}",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			if h, err := parse(src); err == nil {
				t.Fatalf("parsed: %+v", h)
			}
		})
	}
}

// TestProvisionRefusesBadConfiguration covers what only Provision can check, on a bare
// context (no STS app: keys would come from the issuer's metadata).
func TestProvisionRefusesBadConfiguration(t *testing.T) {
	cases := map[string]*Handler{
		"no issuer":                    {Resource: testResource},
		"no resource":                  {Issuer: "https://sts.test/zones/demo"},
		"check_bytes below 512":        {Issuer: "https://sts.test/zones/demo", Resource: testResource, CheckBytes: 511},
		"check_bytes above 1 MiB":      {Issuer: "https://sts.test/zones/demo", Resource: testResource, CheckBytes: 1<<20 + 1},
		"an unknown on_stale":          {Issuer: "https://sts.test/zones/demo", Resource: testResource, OnStale: "maybe"},
		"an issuer that is no zone":    {Issuer: "https://sts.test/other/demo", Resource: testResource},
		"a leeway above the grace":     {Issuer: "https://sts.test/zones/demo", Resource: testResource, Leeway: caddy.Duration(time.Hour)},
		"a short stream key":           {Issuer: "https://sts.test/zones/demo", Resource: testResource, Revocation: caddyrev.Config{StreamKey: "short"}},
		"a prefix on the local bus":    {Issuer: "https://sts.test/zones/demo", Resource: testResource, Revocation: caddyrev.Config{Transport: "local", StreamPrefix: "p:"}},
		"an exchange endpoint no URL":  {Issuer: "https://sts.test/zones/demo", Resource: testResource, Exchange: &ExchangeConfig{TokenEndpoint: "ftp://sts.test/token"}},
		"a transport that is no Redis": {Issuer: "https://sts.test/zones/demo", Resource: testResource, Revocation: caddyrev.Config{Transport: "memcache://x"}},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := h.Provision(ctx)
			// Caddy cleans up after a failed Provision too.
			if cerr := h.Cleanup(); cerr != nil {
				t.Fatal(cerr)
			}
			if err == nil {
				t.Fatal("provisioned")
			}
			if !strings.HasPrefix(err.Error(), "caracal_mandate: ") {
				t.Fatalf("error %q does not name the handler", err)
			}
		})
	}
}

func TestProvisionAppliesDefaults(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Issuer: "https://sts.test/zones/demo", Resource: testResource}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if h.CheckBytes != verify.DefaultCheckBytes || !h.forward || !h.endOnExp || h.verifier.Leeway() != 30*time.Second || h.exchanger != nil {
		t.Fatalf("defaults: check_bytes %d, forward %v, end on expiry %v, leeway %s", h.CheckBytes, h.forward, h.endOnExp, h.verifier.Leeway())
	}
	if h.pipeline.Transport != "local" {
		t.Fatalf("transport %q, want local", h.pipeline.Transport)
	}
}

// TestLocalGatewayWithoutAnSTSRefusesAndSaysWhy: on the local bus with no STS in the
// process nothing can ever publish a heartbeat, so the gateway answers 503 with the
// reason and Retry-After instead of passing mandates it cannot check.
func TestLocalGatewayWithoutAnSTSRefusesAndSaysWhy(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Issuer: "https://sts.test/zones/demo", Resource: testResource,
		Revocation: caddyrev.Config{Transport: "local", StreamKey: "a key no publisher of this test uses"}}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer a.b.c")
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Fatal("the request went through")
		return nil
	})
	if err := h.ServeHTTP(rec, r, next); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(body, "revocation state is stale: no") || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q, body %q", rec.Code, rec.Header().Get("Retry-After"), body)
	}
}
