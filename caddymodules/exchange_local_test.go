package caddymodules

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/verify"
)

// fakeSTS is a localSTS that records the exchanges asked of it.
type fakeSTS struct {
	got    []issuer.ExchangeRequest
	issued *issuer.Issued
	err    error
}

func (f *fakeSTS) ZoneOf(iss string) (string, bool) {
	return "demo", iss == "https://sts.test/zones/demo"
}

func (f *fakeSTS) Keys(string) mandate.KeySource { return nil }

func (f *fakeSTS) Exchange(_ context.Context, req issuer.ExchangeRequest) (*issuer.Issued, error) {
	f.got = append(f.got, req)
	return f.issued, f.err
}

func TestInProcessExchangeUsesTheLocalSTS(t *testing.T) {
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	for _, scopes := range [][]string{nil, {"read"}} {
		sts := &fakeSTS{issued: &issuer.Issued{Token: "minted", Expires: exp}}
		x, err := newExchanger(&ExchangeConfig{}, "https://sts.test/zones/demo", testResource, scopes, sts, "demo")
		if err != nil {
			t.Fatal(err)
		}
		if x.local == nil {
			t.Fatal("an STS of this process serving the route's zone is not used in process")
		}
		tok, gotExp, err := x.exchange(context.Background(), "session-mandate")
		if err != nil || tok != "minted" || !gotExp.Equal(exp) {
			t.Fatalf("exchange = %q %s %v", tok, gotExp, err)
		}
		req := sts.got[0]
		if req.ZoneID != "demo" || req.SubjectToken != "session-mandate" || req.SubjectTokenType != issuer.TokenTypeAccessToken ||
			!slices.Equal(req.Resources, []string{testResource}) || !slices.Equal(req.Scopes, scopes) || (scopes == nil) != (req.Scopes == nil) {
			t.Fatalf("request %+v for route scopes %v", req, scopes)
		}
	}
	t.Run("an STS refusal becomes the gateway's RFC 6750 answer", func(t *testing.T) {
		sts := &fakeSTS{err: &issuer.Error{Status: http.StatusForbidden, Code: issuer.CodeAccessDenied, Description: "no grant"}}
		x, err := newExchanger(&ExchangeConfig{}, "https://sts.test/zones/demo", testResource, nil, sts, "demo")
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = x.exchange(context.Background(), "session-mandate")
		var ve *verify.Error
		if !errors.As(err, &ve) || ve.Status != http.StatusForbidden || ve.Code != "insufficient_scope" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("another zone's STS or an explicit endpoint is reached over HTTP", func(t *testing.T) {
		x, err := newExchanger(&ExchangeConfig{}, "https://sts.test/zones/demo", testResource, nil, &fakeSTS{}, "other")
		if err != nil || x.local != nil || x.endpoint != "https://sts.test/zones/demo/oauth2/token" {
			t.Fatalf("%+v %v", x, err)
		}
		x, err = newExchanger(&ExchangeConfig{TokenEndpoint: "https://elsewhere.test/token"}, "https://sts.test/zones/demo", testResource, nil, &fakeSTS{}, "demo")
		if err != nil || x.local != nil {
			t.Fatalf("%+v %v", x, err)
		}
	})
}
