package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"
)

// Body limits of the Coordinator API: policy bundles carry Rego sources, everything
// else is a handful of fields.
const (
	maxBody       = 64 << 10
	maxPolicyBody = 1 << 20
	// maxJSONDepth bounds nesting (the policy data document is the only deep value).
	maxJSONDepth = 64
)

// readJSON reads a request body that must be a JSON object of at most limit bytes and
// decodes it into dst. With optional set, an empty body is accepted and leaves dst
// untouched.
func readJSON(r *http.Request, limit int64, dst any, optional bool) *apiError {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return badRequest("the request body could not be read")
	}
	if int64(len(body)) > limit {
		return badRequest(fmt.Sprintf("the request body exceeds %d bytes", limit))
	}
	if len(body) == 0 {
		if optional {
			return nil
		}
		return badRequest("a JSON request body is required")
	}
	if aerr := checkContentType(r.Header.Values("Content-Type")); aerr != nil {
		return aerr
	}
	if err := decodeJSON(body, dst); err != nil {
		return badRequest(err.Error())
	}
	return nil
}

// checkContentType accepts exactly one application/json media type, with at most a
// UTF-8 charset parameter.
func checkContentType(values []string) *apiError {
	if len(values) != 1 {
		return badRequest("Content-Type must be application/json")
	}
	mt, params, err := mime.ParseMediaType(values[0])
	if err != nil || mt != "application/json" {
		return badRequest("Content-Type must be application/json")
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return badRequest("Content-Type parameters other than charset=utf-8 are not accepted")
		}
	}
	return nil
}

// decodeJSON decodes body into dst, a pointer to a struct with json tags. It is
// stricter than encoding/json so that every reader of a body sees the same values:
// the body must be valid UTF-8 and a single JSON object; its members must match the
// struct's field names exactly (encoding/json would also take other letter cases); no
// object anywhere may repeat a member name (encoding/json keeps the last one, other
// parsers the first); and nesting is bounded.
func decodeJSON(body []byte, dst any) error {
	if !utf8.Valid(body) {
		return errors.New("the request body is not valid UTF-8")
	}
	if err := checkJSONShape(body, jsonFields(dst)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return fmt.Errorf("member %q must be %s", typeErr.Field, kindName(typeErr.Type))
		}
		return errors.New("the request body is not a valid JSON object of the expected members")
	}
	return nil
}

// frame is one open container during checkJSONShape's walk.
type frame struct {
	object  bool
	wantKey bool // inside an object: the next token is a member name or '}'
	keys    map[string]struct{}
}

// checkJSONShape walks the tokens of body: one top-level object whose member names are
// in fields, no repeated member names in any object, depth at most maxJSONDepth, and
// nothing after the object.
func checkJSONShape(body []byte, fields []string) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return errors.New("the request body is not valid JSON")
	}
	if tok != json.Delim('{') {
		return errors.New("the request body must be a JSON object")
	}
	stack := []frame{{object: true, wantKey: true, keys: make(map[string]struct{})}}
	for len(stack) > 0 {
		tok, err := dec.Token()
		if err != nil {
			return errors.New("the request body is not valid JSON")
		}
		top := &stack[len(stack)-1]
		if top.object && top.wantKey {
			if tok == json.Delim('}') {
				stack = valueDone(stack[:len(stack)-1])
				continue
			}
			key, ok := tok.(string)
			if !ok {
				return errors.New("the request body is not valid JSON")
			}
			if _, dup := top.keys[key]; dup {
				return fmt.Errorf("member %.64q appears more than once", key)
			}
			if len(stack) == 1 && !slices.Contains(fields, key) {
				return fmt.Errorf("unknown member %.64q", key)
			}
			top.keys[key] = struct{}{}
			top.wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxJSONDepth {
				return fmt.Errorf("the request body nests deeper than %d levels", maxJSONDepth)
			}
			f := frame{object: tok == json.Delim('{'), wantKey: true}
			if f.object {
				f.keys = make(map[string]struct{})
			}
			stack = append(stack, f)
		case json.Delim(']'):
			stack = valueDone(stack[:len(stack)-1])
		default:
			stack = valueDone(stack)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("the request body has data after the JSON object")
	}
	return nil
}

// valueDone records that the innermost container received a complete value: an
// object then expects its next member name.
func valueDone(stack []frame) []frame {
	if n := len(stack); n > 0 && stack[n-1].object {
		stack[n-1].wantKey = true
	}
	return stack
}

// jsonFields lists the member names of the struct dst points to.
func jsonFields(dst any) []string {
	t := reflect.TypeOf(dst).Elem()
	fields := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields = append(fields, name)
		}
	}
	return fields
}

// kindName describes the JSON value a Go type expects, for error descriptions.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Pointer:
		return kindName(t.Elem())
	default:
		return "an object"
	}
}
