package issuer

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseForm(t *testing.T) {
	t.Run("single values are kept, empty values count as present", func(t *testing.T) {
		f, err := parseForm([]byte("grant_type=client_credentials&scope=&resource=https%3A%2F%2Fa.test"))
		if err != nil {
			t.Fatal(err)
		}
		if f.get("grant_type") != "client_credentials" || !f.has("scope") || f.get("scope") != "" || len(f.resources) != 1 || f.get("resource") != "https://a.test" {
			t.Fatalf("%+v", f)
		}
	})
	t.Run("a repeated parameter is refused", func(t *testing.T) {
		if _, err := parseForm([]byte("a=1&a=2")); !errors.Is(err, errRepeated) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("repeated resources are counted, not refused", func(t *testing.T) {
		f, err := parseForm([]byte("resource=a&resource=b"))
		if err != nil || len(f.resources) != 2 {
			t.Fatalf("%+v %v", f, err)
		}
	})
	for _, bad := range []string{"a=%zz", "a=1;b=2", "%=1"} {
		t.Run("malformed "+bad, func(t *testing.T) {
			if _, err := parseForm([]byte(bad)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// FuzzParseForm: any body either parses into a form that re-encodes to the same
// parameters (each at most once, resource counted) or is refused; it never panics.
func FuzzParseForm(f *testing.F) {
	for _, s := range []string{
		"grant_type=client_credentials",
		"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&resource=https%3A%2F%2Fapi.test&scope=read+write",
		"resource=a&resource=b",
		"a=1&a=2",
		"a=%zz",
		"a=1;b=2",
		"&&&=",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		form, err := parseForm(body)
		if err != nil {
			return
		}
		vals, perr := url.ParseQuery(string(body))
		if perr != nil {
			t.Fatalf("parseForm accepted what url.ParseQuery refuses: %q", body)
		}
		for k, v := range vals {
			if k != "resource" && len(v) > 1 {
				t.Fatalf("repeated %q accepted", k)
			}
			if form.get(k) != v[0] {
				t.Fatalf("%q = %q, want %q", k, form.get(k), v[0])
			}
		}
		if len(form.values) != len(vals) || len(form.resources) != len(vals["resource"]) {
			t.Fatalf("form %+v does not match %v", form, vals)
		}
	})
}

// TestReadBody: the body is read whole whatever length was declared, and never past the limit.
func TestReadBody(t *testing.T) {
	small := strings.Repeat("a", 700)
	big := strings.Repeat("b", maxFormBytes+10)
	for _, tt := range []struct {
		name     string
		body     string
		declared int64
		want     int
	}{
		{"declared exactly", small, int64(len(small)), len(small)},
		{"unknown length", small, -1, len(small)},
		{"declared shorter than sent", small, 10, len(small)},
		{"declared longer than sent", small, 4000, len(small)},
		{"empty", "", 0, 0},
		{"over the limit, unknown length", big, -1, maxFormBytes + 1},
		{"over the limit, declared small", big, 5, maxFormBytes + 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readBody(strings.NewReader(tt.body), tt.declared)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want || string(got) != tt.body[:tt.want] {
				t.Fatalf("read %d bytes, want the first %d", len(got), tt.want)
			}
		})
	}
	t.Run("a read error is returned", func(t *testing.T) {
		if _, err := readBody(iotest.ErrReader(errors.New("boom")), 10); err == nil {
			t.Fatal("no error")
		}
	})
}
