package control

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/caracalgw/caracal/internal/store"
)

func TestDecodeJSON(t *testing.T) {
	valid := `{"target_session_id":"s","resource":"https://api.test","scopes":["a","b"],"ttl_seconds":60,"max_hops":2,"parent_edge_id":"p"}`
	var got delegationRequest
	if err := decodeJSON([]byte(valid), &got); err != nil {
		t.Fatal(err)
	}
	hops := 2
	want := delegationRequest{TargetSessionID: "s", Resource: "https://api.test", Scopes: []string{"a", "b"}, TTLSeconds: 60, MaxHops: &hops, ParentEdgeID: "p"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}

	for _, c := range []struct{ name, body, err string }{
		{"not JSON", `{"scopes":`, "not valid JSON"},
		{"an array", `[]`, "must be a JSON object"},
		{"null", `null`, "must be a JSON object"},
		{"a string", `"x"`, "must be a JSON object"},
		{"an unknown member", `{"resource":"r","admin":true}`, `unknown member "admin"`},
		{"a member in another letter case", `{"Resource":"r"}`, `unknown member "Resource"`},
		{"a repeated member", `{"resource":"a","resource":"b"}`, `member "resource" appears more than once`},
		{"a repeated member spelled with an escape", `{"resource":"a","\u0072esource":"b"}`, "appears more than once"},
		{"a repeated member in a nested object", `{"scopes":[{"a":1,"a":2}]}`, "appears more than once"},
		{"trailing data", `{"resource":"r"} {}`, "data after the JSON object"},
		{"trailing garbage", `{"resource":"r"}x`, "data after the JSON object"},
		{"a wrong type", `{"ttl_seconds":"60"}`, `member "ttl_seconds" must be an integer`},
		{"a fraction", `{"ttl_seconds":1.5}`, `member "ttl_seconds" must be an integer`},
		{"an integer overflow", `{"ttl_seconds":1e30}`, `member "ttl_seconds" must be an integer`},
		{"scopes not an array", `{"scopes":"a b"}`, `member "scopes" must be an array`},
		{"invalid UTF-8", "{\"resource\":\"\xff\"}", "not valid UTF-8"},
		{"deep nesting", `{"scopes":` + strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth) + `}`, "nests deeper"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var req delegationRequest
			err := decodeJSON([]byte(c.body), &req)
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v, want one containing %q", err, c.err)
			}
		})
	}

	t.Run("null members leave the zero value", func(t *testing.T) {
		var req delegationRequest
		if err := decodeJSON([]byte(`{"max_hops":null,"parent_edge_id":null}`), &req); err != nil || req.MaxHops != nil || req.ParentEdgeID != "" {
			t.Fatalf("%+v, %v", req, err)
		}
	})
}

func TestCheckContentType(t *testing.T) {
	for _, ok := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON; charset=UTF-8"} {
		if aerr := checkContentType([]string{ok}); aerr != nil {
			t.Errorf("%q refused: %v", ok, aerr)
		}
	}
	for _, bad := range [][]string{nil, {""}, {"text/plain"}, {"application/json; charset=latin1"}, {"application/json; foo=bar"},
		{"application/json", "application/json"}, {"application/jsonx"}, {"multipart/form-data"}} {
		if checkContentType(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestBadBodiesChangeNothing sends broken bodies to every endpoint that takes one and
// checks the 400 and that storage is unchanged.
func TestBadBodiesChangeNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, st store.Store) {
		f := newIsolationFixture(t, st)
		before := f.snapshot(t)
		// member is a member the endpoint knows, for the repeated-member case ("" when
		// it takes none: then any member is unknown).
		targets := []struct {
			method, path, token, member string
			limit                       int
		}{
			{http.MethodPost, "/v1/zones", bootstrapToken, "id", maxBody},
			{http.MethodPost, "/v1/admin-tokens", bootstrapToken, "capability", maxBody},
			{http.MethodPost, "/v1/admin-tokens/" + f.victimID + "/revoke", bootstrapToken, "", maxBody},
			{http.MethodPost, "/v1/zones/a/applications", f.aWrite, "name", maxBody},
			{http.MethodPost, "/v1/zones/a/resources", f.aWrite, "identifier", maxBody},
			{http.MethodPut, "/v1/zones/a/policy", f.aWrite, "modules", maxPolicyBody},
			{http.MethodPost, "/v1/zones/a/keys/rotate", f.aWrite, "", maxBody},
			{http.MethodPost, "/v1/zones/a/sessions/" + f.s2 + "/revoke", f.aWrite, "reason", maxBody},
			{http.MethodPost, "/v1/zones/a/delegations", f.aliceA, "resource", maxBody},
			{http.MethodPost, "/v1/zones/a/delegations/" + f.e1 + "/revoke", f.aliceA, "reason", maxBody},
		}
		for _, tg := range targets {
			oversized := `{"name":"` + strings.Repeat("x", tg.limit) + `"}`
			repeated, repeatedRule := `{"zzz":1}`, "unknown member"
			if tg.member != "" {
				repeated, repeatedRule = `{"`+tg.member+`":"x","`+tg.member+`":"y"}`, "more than once"
			}
			for _, c := range []struct{ name, contentType, body, rule string }{
				{"malformed", "application/json", `{"`, "not valid JSON"},
				{"oversized", "application/json", oversized, "exceeds"},
				{"of the wrong content type", "text/plain", `{}`, "Content-Type"},
				{"without a content type", "", `{}`, "Content-Type"},
				{"with an unknown member", "application/json", `{"zzz":1}`, "unknown member"},
				{"with a repeated member", "application/json", repeated, repeatedRule},
				{"that is an array", "application/json", `[]`, "JSON object"},
			} {
				t.Run(tg.method+" "+tg.path+" with a body "+c.name, func(t *testing.T) {
					req := httptest.NewRequest(tg.method, testBase+tg.path, strings.NewReader(c.body))
					if c.contentType != "" {
						req.Header.Set("Content-Type", c.contentType)
					}
					req.Header.Set("Authorization", "Bearer "+tg.token)
					rec := httptest.NewRecorder()
					f.e.svc.ServeHTTP(rec, req)
					wantRule(t, rec, c.rule)
					if after := f.snapshot(t); !reflect.DeepEqual(before, after) {
						t.Fatalf("storage changed:\nbefore %+v\nafter  %+v", before, after)
					}
				})
			}
		}
	})
}

// FuzzDecodeJSON checks that whatever decodeJSON accepts is one JSON object that
// encoding/json reads the same way, and that the decoded value survives a round trip.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"target_session_id":"s","resource":"https://api.test","scopes":["a"],"ttl_seconds":60}`,
		`{"target_session_id":"s","max_hops":null,"parent_edge_id":"p"}`,
		`{"resource":"a","resource":"b"}`,
		`{"Resource":"a"}`,
		`{"scopes":[[[]]]}`,
		`{} {}`,
		`{"ttl_seconds":1e3}`,
		"{\"resource\":\"\\ud800\"}",
		`{"resource":"\u0072"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got delegationRequest
		if err := decodeJSON(body, &got); err != nil {
			return
		}
		if !json.Valid(body) || !bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{")) {
			t.Fatalf("accepted %q, which is not one JSON object", body)
		}
		var ref delegationRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ref); err != nil || !reflect.DeepEqual(got, ref) {
			t.Fatalf("accepted %q as %+v; encoding/json reads %+v (%v)", body, got, ref, err)
		}
		again, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		var round delegationRequest
		if err := decodeJSON(again, &round); err != nil {
			t.Fatalf("re-encoded %q refused: %v", again, err)
		}
		if !reflect.DeepEqual(got, round) {
			t.Fatalf("round trip changed %+v into %+v", got, round)
		}
	})
}
