package mcprules

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// FuzzParse checks Parse never panics, that every refusal is a well-formed JSON-RPC
// error, and that whatever it accepts reads the same under encoding/json: the
// method, the name or URI, and the id. The seed corpus is testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(callSearch), "tools/call", "search")
	f.Add([]byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), "", "")
	f.Fuzz(func(t *testing.T, body []byte, method, name string) {
		h := http.Header{"Content-Type": {"application/json"}}
		if method != "" {
			h.Set(HeaderMethod, method)
		}
		if name != "" {
			h.Set(HeaderName, name)
		}
		m, err := Parser{}.Parse(h, body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if !json.Valid(e.Body()) {
				t.Fatalf("error body %q is not JSON", e.Body())
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted a body encoding/json finds invalid: %q", body)
		}
		// Maps keep keys exact, as JavaScript and Python read them.
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatalf("accepted %q, encoding/json: %v", body, err)
		}
		var gotMethod string
		if raw, ok := top["method"]; ok {
			if err := json.Unmarshal(raw, &gotMethod); err != nil {
				t.Fatalf("method %s: %v", raw, err)
			}
		}
		if gotMethod != m.Method {
			t.Fatalf("method %q, encoding/json reads %q in %q", m.Method, gotMethod, body)
		}
		if m.Kind == KindRequest && !bytes.Equal(bytes.TrimSpace(top["id"]), m.ID) {
			t.Fatalf("id %s, encoding/json reads %s", m.ID, top["id"])
		}
		if field := nameField(m.Method); field != "" {
			var params map[string]json.RawMessage
			if err := json.Unmarshal(top["params"], &params); err != nil {
				t.Fatalf("params of %q: %v", body, err)
			}
			var got string
			if err := json.Unmarshal(params[field], &got); err != nil || got != m.Name {
				t.Fatalf("name %q, encoding/json reads %q (%v) in %q", m.Name, got, err, body)
			}
		}
		if method != "" {
			if v, _ := headerValue(method, false); v != m.Method {
				t.Fatalf("accepted Mcp-Method %q for method %q", method, m.Method)
			}
		}
	})
}

// FuzzSSEFilter feeds a stream in chunks of every size to two filters: one that
// keeps every tool must pass the stream through unchanged up to its last complete
// event, and one that keeps none must leave no tool in any event a client would
// read. The seed corpus is testdata/fuzz/FuzzSSEFilter.
func FuzzSSEFilter(f *testing.F) {
	f.Add([]byte("data: "+listing+"\n\n"), uint8(3))
	f.Add([]byte(": hi\r\ndata: {\"result\":\r\ndata: {\"tools\":[{\"name\":\"a\"}]}}\r\n\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		n := int(chunk) + 1
		run := func(keep func(string) bool) ([]byte, error) {
			var out bytes.Buffer
			flt := NewSSEFilter(&out, keep, 4096)
			for s := stream; len(s) > 0; {
				k := min(n, len(s))
				if _, err := flt.Write(s[:k]); err != nil {
					return out.Bytes(), err
				}
				s = s[k:]
			}
			return out.Bytes(), flt.Close()
		}

		// Without a tools member nothing can be rewritten (entries that are not
		// objects with one string name are dropped even when every name is kept).
		if !bytes.Contains(stream, []byte("tools")) && !bytes.Contains(stream, []byte(`\u`)) {
			all, err := run(func(string) bool { return true })
			if !bytes.HasPrefix(stream, all) {
				t.Fatalf("a stream without a listing changed:\n%q\ngave\n%q", stream, all)
			}
			if err == nil && len(stream)-len(all) > 4096 {
				t.Fatalf("held %d bytes without error", len(stream)-len(all))
			}
		}

		none, _ := run(func(string) bool { return false })
		for _, data := range sseEvents(string(none)) {
			var doc map[string]json.RawMessage
			if json.Unmarshal([]byte(data), &doc) != nil {
				continue
			}
			var result map[string]json.RawMessage
			if json.Unmarshal(doc["result"], &result) != nil {
				continue
			}
			var tools []json.RawMessage
			if json.Unmarshal(result["tools"], &tools) == nil && len(tools) > 0 {
				t.Fatalf("a tool survived keeping none: %q from %q", data, stream)
			}
		}
		if got, max := len(sseEvents(string(none))), len(sseEvents(string(stream))); got > max {
			t.Fatalf("the filter made up events: %d from %d in %q", got, max, stream)
		}
	})
}

// FuzzFilterToolsList checks, against encoding/json, that every entry left in a
// filtered listing is an object whose name the keep function accepts, and that a
// valid document is never refused for its tools alone.
func FuzzFilterToolsList(f *testing.F) {
	f.Add([]byte(listing))
	f.Add([]byte(`{"result":{"tools":[{"name":"s1"},{"name":"x"},1,{"name":"s2","name":"s3"}]}}`))
	keep := func(name string) bool { return strings.HasPrefix(name, "s") }
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, _, err := FilterToolsList(doc, keep)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("filtered %q into invalid JSON %q", doc, out)
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(out, &top) != nil {
			return
		}
		var result map[string]json.RawMessage
		if json.Unmarshal(top["result"], &result) != nil {
			return
		}
		var tools []json.RawMessage
		if json.Unmarshal(result["tools"], &tools) != nil {
			return
		}
		for _, tool := range tools {
			var entry map[string]json.RawMessage
			var name string
			if json.Unmarshal(tool, &entry) != nil || json.Unmarshal(entry["name"], &name) != nil || !keep(name) {
				t.Fatalf("entry %s survived filtering %q", tool, doc)
			}
		}
	})
}
