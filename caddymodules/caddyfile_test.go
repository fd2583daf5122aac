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

	"github.com/caracalgw/caracal/internal/caddyrevocation"
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
		"an unknown option":                  "caracal_mandate {\n" + base + " colour blue\n}",
		"two issuers on one line":            "caracal_mandate {\n issuer a b\n resource https://api.test/v1\n}",
		"scopes without a scope":             "caracal_mandate {\n" + base + " scopes\n}",
		"a bad duration":                     "caracal_mandate {\n" + base + " max_staleness soon\n}",
		"a bad leeway":                       "caracal_mandate {\n" + base + " leeway 1 2\n}",
		"a check_bytes that is no int":       "caracal_mandate {\n" + base + " check_bytes 4k\n}",
		"forward_mandate neither on nor off": "caracal_mandate {\n" + base + " forward_mandate yes\n}",
		"end_on_expiry without a value":      "caracal_mandate {\n" + base + " end_on_expiry\n}",
		"reject_stale_epoch with a value":    "caracal_mandate {\n" + base + " reject_stale_epoch on\n}",
		"exchange with two endpoints":        "caracal_mandate {\n" + base + " exchange a b\n}",
		"an unknown exchange option":         "caracal_mandate {\n" + base + " exchange {\n  cache 1\n }\n}",
		"a bad renew_before":                 "caracal_mandate {\n" + base + " exchange {\n  renew_before later\n }\n}",
		"an unknown revocation option":       "caracal_mandate {\n" + base + " revocation local {\n  colour blue\n }\n}",
		"a revocation without transport":     "caracal_mandate {\n" + base + " revocation\n}",
		"a repeated issuer":                  "caracal_mandate {\n" + base + " issuer https://sts.test/zones/other\n}",
		"a repeated revocation":              "caracal_mandate {\n" + base + " revocation local\n revocation local\n}",
		"a repeated exchange option":         "caracal_mandate {\n" + base + " exchange {\n  renew_before 1s\n  renew_before 2s\n }\n}",
		"a stream key on the line and block": "caracal_mandate {\n" + base + " revocation local stream_key 0123456789abcdef {\n  stream_key 0123456789abcdef\n }\n}",
		"a one-line setting without a value": "caracal_mandate {\n" + base + " revocation redis://127.0.0.1:6379/0 stream_key\n}",
		"an unknown one-line setting":        "caracal_mandate {\n" + base + " revocation redis://127.0.0.1:6379/0 colour blue\n}",
		"two values in the revocation block": "caracal_mandate {\n" + base + " revocation local {\n  stream_key a b\n }\n}",
	}
	for name, src := range cases {
		t.Run(name, func(t *testing.T) {
			if h, err := parse(src); err == nil {
				t.Fatalf("parsed: %+v", h)
			}
		})
	}
}

// load provisions and validates h as Caddy loads a module: Provision, then Validate,
// and Cleanup when either fails.
func load(ctx caddy.Context, h *Handler) error {
	err := h.Provision(ctx)
	if err == nil {
		err = h.Validate()
	}
	if err != nil {
		if cerr := h.Cleanup(); cerr != nil {
			return cerr
		}
	}
	return err
}

// TestLoadRefusesBadConfiguration covers what only loading can check, on a bare
// context (no STS app: keys would come from the issuer's metadata).
func TestLoadRefusesBadConfiguration(t *testing.T) {
	cases := map[string]*Handler{
		"no issuer":                    {Resource: testResource},
		"no resource":                  {Issuer: "https://sts.test/zones/demo"},
		"check_bytes below 512":        {Issuer: "https://sts.test/zones/demo", Resource: testResource, CheckBytes: 511},
		"check_bytes above 1 MiB":      {Issuer: "https://sts.test/zones/demo", Resource: testResource, CheckBytes: 1<<20 + 1},
		"an unknown on_stale":          {Issuer: "https://sts.test/zones/demo", Resource: testResource, OnStale: "maybe"},
		"an issuer that is no zone":    {Issuer: "https://sts.test/other/demo", Resource: testResource},
		"a leeway above the grace":     {Issuer: "https://sts.test/zones/demo", Resource: testResource, Leeway: caddy.Duration(time.Hour)},
		"a short stream key":           {Issuer: "https://sts.test/zones/demo", Resource: testResource, Revocation: caddyrevocation.Config{StreamKey: "short"}},
		"a prefix on the local bus":    {Issuer: "https://sts.test/zones/demo", Resource: testResource, Revocation: caddyrevocation.Config{Transport: "local", StreamPrefix: "p:"}},
		"an exchange endpoint no URL":  {Issuer: "https://sts.test/zones/demo", Resource: testResource, Exchange: &ExchangeConfig{TokenEndpoint: "ftp://sts.test/token"}},
		"a transport that is no Redis": {Issuer: "https://sts.test/zones/demo", Resource: testResource, Revocation: caddyrevocation.Config{Transport: "memcache://x"}},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := load(ctx, h)
			if err == nil {
				t.Fatal("loaded")
			}
			// Caddy prefixes the module's name itself ("provision http.handlers.caracal_mandate: ...").
			if strings.Contains(err.Error(), "caracal_mandate") {
				t.Fatalf("error %q repeats the module name Caddy adds", err)
			}
		})
	}
}

// TestCaddyfileErrorsNameTheLine: a repeated or unknown subdirective is refused with
// the file and line of the offending token.
func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	cases := map[string]struct{ src, want string }{
		"repeated": {"caracal_mandate {\n issuer a\n resource b\n issuer c\n}",
			"caracal_mandate: issuer is given twice (first at Testfile:2), at Testfile:4"},
		"unknown": {"caracal_mandate {\n issuer a\n colour blue\n}",
			`caracal_mandate: unknown subdirective "colour", at Testfile:3`},
		"a revocation setting outside revocation": {"caracal_mandate {\n revocation local stream_key 0123456789abcdef\n stream_prefix x\n}",
			`caracal_mandate: unknown subdirective "stream_prefix", at Testfile:3`},
		"repeated on the revocation line": {"caracal_mandate {\n issuer a\n revocation local stream_key 0123456789abcdef stream_key 0123456789abcdef\n}",
			"revocation: stream_key is given twice (first at Testfile:3), at Testfile:3"},
		"empty value": {"caracal_mandate {\n issuer\n}",
			"issuer: the value is empty"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := parse(c.src)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestCaddyfileRevocationForms: the one-line and the block form give the same settings.
func TestCaddyfileRevocationForms(t *testing.T) {
	want := caddyrevocation.Config{Transport: "redis://127.0.0.1:6379/0", StreamKey: "{env.KEY}", StreamPrefix: "p:", Retention: caddy.Duration(2 * time.Hour)}
	for name, src := range map[string]string{
		"one line": "caracal_mandate {\n revocation redis://127.0.0.1:6379/0 stream_key {env.KEY} stream_prefix p: retention 2h\n}",
		"block":    "caracal_mandate {\n revocation redis://127.0.0.1:6379/0 {\n  stream_key {env.KEY}\n  stream_prefix p:\n  retention 2h\n }\n}",
		"both":     "caracal_mandate {\n revocation redis://127.0.0.1:6379/0 stream_key {env.KEY} {\n  stream_prefix p:\n  retention 2h\n }\n}",
	} {
		t.Run(name, func(t *testing.T) {
			h, err := parse(src)
			if err != nil {
				t.Fatal(err)
			}
			if h.Revocation != want {
				t.Fatalf("revocation = %+v, want %+v", h.Revocation, want)
			}
		})
	}
}

func TestProvisionAppliesDefaults(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Issuer: "https://sts.test/zones/demo", Resource: testResource}
	if err := load(ctx, h); err != nil {
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
		Revocation: caddyrevocation.Config{Transport: "local", StreamKey: "a key no publisher of this test uses"}}
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
