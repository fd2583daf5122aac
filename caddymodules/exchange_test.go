package caddymodules

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

// TestExchangeSharesOneSTSCallPerSessionMandate: requests presenting the same session
// mandate while its exchange is under way wait for that exchange instead of sending their
// own; those that come after it find the cached resource mandate. One STS call serves
// them all.
func TestExchangeSharesOneSTSCallPerSessionMandate(t *testing.T) {
	f := newFixture(t)
	resourceToken, _ := f.token(t, nil)
	var hits atomic.Int32
	entered := make(chan struct{}, 1)
	hold := make(chan struct{})
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case entered <- struct{}{}:
		default:
		}
		<-hold
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": resourceToken, "expires_in": 300, "token_type": "N_A"})
	}))
	defer sts.Close()
	x, err := newExchanger(&ExchangeConfig{TokenEndpoint: sts.URL}, f.issuer, testResource, nil, nil, f.zone)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.Options{Issuer: f.issuer, Resource: testResource, Keys: f.keys, Revocations: revocation.NewRevokedSet(nil)})
	if err != nil {
		t.Fatal(err)
	}
	const callers = 8
	var wg, calling sync.WaitGroup
	calling.Add(callers)
	for range callers {
		wg.Go(func() {
			calling.Done()
			_, tok, err := x.resourceMandate(context.Background(), "the same session mandate", v)
			if err != nil || tok != resourceToken {
				t.Errorf("resourceMandate = %q, %v", tok, err)
			}
		})
	}
	<-entered // the first exchange reached the STS and is held there
	calling.Wait()
	close(hold)
	wg.Wait()
	if got := hits.Load(); got != 1 {
		t.Fatalf("%d STS calls for %d requests with one session mandate, want 1", got, callers)
	}
}
