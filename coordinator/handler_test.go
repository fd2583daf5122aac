package coordinator

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/internal/control"
	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/store/memory"
)

const adminToken = "coordinator-handler-test-token"

// The handler answers every path under /v1 itself (404, 405 as JSON) and passes only
// the others down the chain.
func TestHandlerNeverPassesOnItsOwnPaths(t *testing.T) {
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	st := memory.New()
	sts, err := issuer.New(issuer.Options{
		BaseURL: "https://sts.test",
		Store:   st,
		Policy:  policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Second}),
		KEK:     kek,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := control.New(control.Options{Store: st, STS: sts, BootstrapToken: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{service: svc}
	send := func(method, path, body string) (*httptest.ResponseRecorder, bool) {
		passed := false
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
			passed = true
			w.WriteHeader(http.StatusTeapot)
			return nil
		})
		req := httptest.NewRequest(method, "https://sts.test"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req, next); err != nil {
			t.Fatal(err)
		}
		return rec, passed
	}
	if rec, _ := send(http.MethodPost, "/v1/zones", `{"id":"demo","name":"Demo"}`); rec.Code != http.StatusCreated {
		t.Fatalf("creating the zone: %d %s", rec.Code, rec.Body)
	}
	for _, c := range []struct {
		method, path, allow string
		status              int // 0: passed on
	}{
		{http.MethodPost, "/v1/zones/demo/applications/", "", http.StatusNotFound},
		{http.MethodGet, "/v1/zones/demo/nothing", "", http.StatusNotFound},
		{http.MethodGet, "/v1", "", http.StatusNotFound},
		{http.MethodGet, "/v1/zones/demo/applications", "POST", http.StatusMethodNotAllowed},
		{http.MethodOptions, "/v1/zones/demo/epoch", "GET, HEAD", http.StatusMethodNotAllowed},
		{http.MethodHead, "/v1/zones/demo/epoch", "", http.StatusOK},
		{http.MethodGet, "/api/hello", "", 0},
		{http.MethodGet, "/v1x", "", 0},
	} {
		rec, passed := send(c.method, c.path, `{"client_id":"slash-agent","name":"Slash"}`)
		if c.status == 0 {
			if !passed {
				t.Errorf("%s %s was not passed on: %d", c.method, c.path, rec.Code)
			}
			continue
		}
		if passed || rec.Code != c.status || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: passed on %v, status %d, Content-Type %q; want %d JSON", c.method, c.path, passed, rec.Code, rec.Header().Get("Content-Type"), c.status)
		}
		if got := rec.Header().Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
}
