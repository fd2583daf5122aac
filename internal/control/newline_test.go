package control

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"github.com/caracalgw/caracal/internal/store/memory"
)

// TestJSONAnswersEndWithANewline: every Coordinator answer, success or error, is one JSON
// value followed by exactly one "\n" (curl output then ends its line); Content-Length
// counts it.
func TestJSONAnswersEndWithANewline(t *testing.T) {
	e := newEnv(t, memory.New())
	e.seedZone("demo")
	for _, c := range []struct{ name, method, path, token, body string }{
		{"created", http.MethodPost, "/v1/zones", bootstrapToken, `{"id":"acme","name":"Acme"}`},
		{"read", http.MethodGet, "/v1/zones/demo/epoch", bootstrapToken, ""},
		{"refused", http.MethodGet, "/v1/zones/demo/epoch", "", ""},
		{"invalid", http.MethodPost, "/v1/zones", bootstrapToken, `{"id":`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := e.do(c.method, c.path, c.token, c.body)
			body := rec.Body.Bytes()
			if n := len(body); n < 2 || body[n-1] != '\n' || body[n-2] == '\n' {
				t.Fatalf("%d %q: want one JSON value and one trailing newline", rec.Code, body)
			}
			if !json.Valid(body) {
				t.Fatalf("not JSON: %q", body)
			}
			if cl := rec.Header().Get("Content-Length"); cl != strconv.Itoa(len(body)) {
				t.Fatalf("Content-Length %q for %d bytes", cl, len(body))
			}
		})
	}
}
