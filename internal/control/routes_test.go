package control

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
)

// Unmatched paths and wrong methods under /v1 are answered here, as JSON, and never
// left to the next handler (which in the demo answered an empty 200).
func TestUnmatchedPathsUnderV1Answer404Or405(t *testing.T) {
	e := newEnv(t, memory.New())
	e.seedZone("a")

	// A trailing slash is another path: 404, and the application is not created.
	rec := e.do(http.MethodPost, "/v1/zones/a/applications/", bootstrapToken, `{"client_id":"slash-agent","name":"Slash"}`)
	apiErr(t, rec, http.StatusNotFound, codeNotFound)
	if _, err := e.st.GetApplication(context.Background(), "a", "slash-agent"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the application was created through the trailing-slash path: %v", err)
	}
	for _, path := range []string{"/v1", "/v1/", "/v1/zones/", "/v1/zones/a", "/v1/zones/a/epoch/x"} {
		apiErr(t, e.do(http.MethodGet, path, bootstrapToken, ""), http.StatusNotFound, codeNotFound)
		// Without credentials too: routing comes before authentication.
		apiErr(t, e.do(http.MethodPost, path, "", ""), http.StatusNotFound, codeNotFound)
	}

	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/v1/zones/a/applications", "POST"},
		{http.MethodOptions, "/v1/zones/a/applications", "POST"},
		{http.MethodHead, "/v1/zones", "POST"},
		{http.MethodPost, "/v1/zones/a/epoch", "GET, HEAD"},
		{http.MethodOptions, "/v1/zones/a/epoch", "GET, HEAD"},
		{http.MethodDelete, "/v1/zones/a/policy", "PUT"},
	} {
		rec := e.do(c.method, c.path, bootstrapToken, "")
		if c.method == http.MethodHead {
			if rec.Code != http.StatusMethodNotAllowed {
				t.Fatalf("%s %s: %d", c.method, c.path, rec.Code)
			}
		} else {
			apiErr(t, rec, http.StatusMethodNotAllowed, codeInvalidRequest)
		}
		if got := rec.Header().Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}

	// HEAD on a GET endpoint is served like the GET.
	if rec := e.do(http.MethodHead, "/v1/zones/a/epoch", bootstrapToken, ""); rec.Code != http.StatusOK {
		t.Fatalf("HEAD on the epoch: %d %s", rec.Code, rec.Body)
	}
}
