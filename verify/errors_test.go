package verify

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
)

func TestBearerToken(t *testing.T) {
	const jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
	for _, tc := range []struct {
		name   string
		values []string
		token  string // expected token; empty when an error is expected
		status int
		code   string
	}{
		{name: "a compact JWS is returned as it is", values: []string{"Bearer " + jwt}, token: jwt},
		{name: "the scheme is case-insensitive", values: []string{"BEARER " + jwt}, token: jwt},
		{name: "extra spaces after the scheme are skipped", values: []string{"Bearer   " + jwt}, token: jwt},
		{name: "white space around the field value is not part of it", values: []string{" \tBearer " + jwt + " \t"}, token: jwt},
		{name: "a token with the padding and symbols of b64token is accepted", values: []string{"Bearer a-._~+/Z9=="}, token: "a-._~+/Z9=="},
		{name: "no header is no token", status: http.StatusUnauthorized},
		{name: "an empty header is no token", values: []string{""}, status: http.StatusUnauthorized},
		{name: "another scheme is no token", values: []string{"Basic " + jwt}, status: http.StatusUnauthorized},
		{name: "a scheme that only starts with Bearer is no token", values: []string{"Bearerish " + jwt}, status: http.StatusUnauthorized},
		{name: "a tab after the scheme is not the separator", values: []string{"Bearer\t" + jwt}, status: http.StatusUnauthorized},
		{name: "two headers are an invalid request", values: []string{"Bearer " + jwt, "Bearer " + jwt}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "the scheme alone is an invalid request", values: []string{"Bearer"}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "a token followed by another word is an invalid request", values: []string{"Bearer " + jwt + " x"}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "a tab inside the token is an invalid request", values: []string{"Bearer a\tb"}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "a control character in the token is an invalid request", values: []string{"Bearer a\x00b"}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "a non-ASCII byte in the token is an invalid request", values: []string{"Bearer a\u00e9b"}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "padding alone is an invalid request", values: []string{"Bearer =="}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "padding in the middle is an invalid request", values: []string{"Bearer ab=cd"}, status: http.StatusBadRequest, code: "invalid_request"},
		{name: "a comma-separated second credential is an invalid request", values: []string{"Bearer a,Bearer b"}, status: http.StatusBadRequest, code: "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, v := range tc.values {
				r.Header.Add("Authorization", v)
			}
			got, err := BearerToken(r)
			if tc.token != "" {
				if err != nil || got != tc.token {
					t.Fatalf("got %q, %v; want %q", got, err, tc.token)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got token %q and error %v, want a *verify.Error", got, err)
			}
			if got != "" || e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("got %q, status %d code %q; want status %d code %q", got, e.Status, e.Code, tc.status, tc.code)
			}
		})
	}
}

func TestChallenge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		realm string
		err   *Error
		want  string
	}{
		{
			name:  "a missing token gets the realm alone",
			realm: "api",
			err:   ErrNoToken,
			want:  `Bearer realm="api"`,
		},
		{
			name:  "an invalid token gets the code and the description",
			realm: "api",
			err:   invalidToken("mandate: token expired"),
			want:  `Bearer realm="api", error="invalid_token", error_description="mandate: token expired"`,
		},
		{
			name:  "insufficient scope names the scopes",
			realm: "api",
			err:   &Error{Status: http.StatusForbidden, Code: "insufficient_scope", Description: "missing", Scope: "read write"},
			want:  `Bearer realm="api", error="insufficient_scope", error_description="missing", scope="read write"`,
		},
		{
			name:  "quotes, backslashes, control and non-ASCII characters cannot leave the quoted strings",
			realm: "a\"b\\c\r\nd\u00e9",
			err:   invalidToken("x\", error=\"forged"),
			want:  `Bearer realm="a?b?c??d?", error="invalid_token", error_description="x?, error=?forged"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Challenge(tc.realm, tc.err); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	if got := ErrNoToken.Error(); got != "a bearer mandate is required" {
		t.Errorf("ErrNoToken: %q", got)
	}
	if got := invalidToken("mandate: wrong audience").Error(); got != "invalid_token: mandate: wrong audience" {
		t.Errorf("invalid token: %q", got)
	}
}

func TestWriteErrorHidesOtherErrors(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, "api", errors.New("dial tcp 10.0.0.7:6379: connection refused"))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", rec.Code)
	}
	if body := rec.Body.String(); strings.Contains(body, "10.0.0.7") {
		t.Fatalf("the body leaks the error: %q", body)
	}
	if h := rec.Header().Get("WWW-Authenticate"); h != "" {
		t.Fatalf("a 500 carries a challenge %q", h)
	}
}

func TestWriteErrorUnwrapsAWrappedRefusal(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, "api", errors.Join(errors.New("context"), invalidToken("mandate: wrong zone")))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", rec.Code)
	}
	attrs := parseChallenge(t, rec.Header().Get("WWW-Authenticate"))
	if attrs["error"] != "invalid_token" || attrs["error_description"] != "mandate: wrong zone" {
		t.Fatalf("challenge attributes %v", attrs)
	}
}

// FuzzBearerToken: no header value panics; every refusal is a *Error with a status of
// 400 or 401; a returned token is non-empty, has no white space and no byte outside the
// b64token alphabet, and is exactly what followed the scheme.
func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln", false)
	f.Add("bearer abc", true)
	f.Add("Bearer ", false)
	f.Add("Bearer\u00a0abc", false)
	f.Add("Basic dXNlcjpwYXNz", false)
	f.Fuzz(func(t *testing.T, value string, twice bool) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Add("Authorization", value)
		if twice {
			r.Header.Add("Authorization", value)
		}
		token, err := BearerToken(r)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Status != http.StatusBadRequest && e.Status != http.StatusUnauthorized) {
				t.Fatalf("refusal %#v is not a 400 or 401 *verify.Error", err)
			}
			if token != "" {
				t.Fatalf("a refusal came with token %q", token)
			}
			return
		}
		if twice {
			t.Fatalf("two Authorization headers gave token %q", token)
		}
		if token == "" || strings.ContainsFunc(token, unicode.IsSpace) {
			t.Fatalf("header %q gave token %q", value, token)
		}
		for i := 0; i < len(token); i++ {
			if token[i] <= ' ' || token[i] > '~' {
				t.Fatalf("header %q gave token %q with byte %#x", value, token, token[i])
			}
		}
		if !strings.HasSuffix(strings.TrimRight(value, " \t"), " "+token) {
			t.Fatalf("header %q gave token %q, which is not what followed the scheme", value, token)
		}
	})
}
