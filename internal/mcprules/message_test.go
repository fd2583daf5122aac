package mcprules

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

func jsonHeader(kv ...string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

const callSearch = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":"secret words"}}}`

func TestParseClassifiesEachShape(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		kind       Kind
		method, id string
		msgName    string
	}{
		{"tools/call request", callSearch, KindRequest, "tools/call", "7", "search"},
		{"string id", `{"jsonrpc":"2.0","id":"a-1","method":"tools/list"}`, KindRequest, "tools/list", `"a-1"`, ""},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, KindNotification, "notifications/initialized", "", ""},
		{"result response", `{"jsonrpc":"2.0","id":3,"result":{}}`, KindResponse, "", "3", ""},
		{"error response with null id", `{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"x"}}`, KindResponse, "", "", ""},
		{"resources/read names its uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a b"}}`, KindRequest, "resources/read", "1", "file:///a b"},
		{"prompts/get names its prompt", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}`, KindRequest, "prompts/get", "1", "greet"},
		{"members in any order", `{"params":{"arguments":{},"name":"fetch"},"method":"tools/call","id":1,"jsonrpc":"2.0"}`, KindRequest, "tools/call", "1", "fetch"},
		{"escaped keys and values", `{"jsonrpc":"2.0","id":1,"m\u0065thod":"tools\/call","params":{"n\u0061me":"se\u0061rch"}}`, KindRequest, "tools/call", "1", "search"},
		{"surrogate pair", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud83d\ude00"}}`, KindRequest, "tools/call", "1", "😀"},
		{"unknown method", `{"jsonrpc":"2.0","id":1,"method":"x/custom","params":[1,2]}`, KindRequest, "x/custom", "1", ""},
		{"white space around", " \n\t" + callSearch + "\r\n", KindRequest, "tools/call", "7", "search"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parser{}.Parse(jsonHeader(), []byte(tc.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.Kind != tc.kind || m.Method != tc.method || string(m.ID) != tc.id || m.Name != tc.msgName {
				t.Fatalf("got kind=%v method=%q id=%s name=%q; want %v %q %s %q", m.Kind, m.Method, m.ID, m.Name, tc.kind, tc.method, tc.id, tc.msgName)
			}
		})
	}
}

// TestParseRefusesHostileInput checks each malformed or ambiguous body is refused
// with the JSON-RPC code and HTTP status a client can act on, and that the message
// never repeats the body's arguments.
func TestParseRefusesHostileInput(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70)
	deepArgs := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`
	for _, tc := range []struct {
		name, body string
		code       int
		id         string
	}{
		{"batch", `[` + callSearch + `]`, CodeInvalidRequest, ""},
		{"empty batch", `[]`, CodeInvalidRequest, ""},
		{"not an object", `"tools/call"`, CodeInvalidRequest, ""},
		{"empty body", ``, CodeParseError, ""},
		{"truncated", callSearch[:40], CodeParseError, ""},
		{"trailing garbage", callSearch + `{}`, CodeParseError, ""},
		{"trailing comma", `{"jsonrpc":"2.0","id":1,"method":"ping",}`, CodeParseError, ""},
		{"single quotes", `{'jsonrpc':'2.0'}`, CodeParseError, ""},
		{"raw control character", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\x01\"}}", CodeParseError, ""},
		{"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"search\xff\"}}", CodeParseError, ""},
		{"lone high surrogate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search\ud800"}}`, CodeParseError, ""},
		{"lone low surrogate", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\udc00search"}}`, CodeParseError, ""},
		{"bad escape", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\x"}}`, CodeParseError, ""},
		{"leading zero", `{"jsonrpc":"2.0","id":01,"method":"ping"}`, CodeParseError, ""},
		{"NaN", `{"jsonrpc":"2.0","id":NaN,"method":"ping"}`, CodeParseError, ""},
		{"deep nesting", deep, CodeParseError, ""},
		{"deep arguments", deepArgs, CodeParseError, ""},
		{"duplicate method", `{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}`, CodeInvalidRequest, "1"},
		{"duplicate escaped method", `{"jsonrpc":"2.0","id":1,"method":"tools/list","\u006dethod":"tools/call"}`, CodeInvalidRequest, "1"},
		{"duplicate tool name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete"}}`, CodeInvalidRequest, "1"},
		{"duplicate params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"},"params":{"name":"delete"}}`, CodeInvalidRequest, "1"},
		{"missing jsonrpc", `{"id":1,"method":"ping"}`, CodeInvalidRequest, "1"},
		{"wrong jsonrpc", `{"jsonrpc":"1.0","id":1,"method":"ping"}`, CodeInvalidRequest, "1"},
		{"jsonrpc as number", `{"jsonrpc":2.0,"id":1,"method":"ping"}`, CodeInvalidRequest, "1"},
		{"method as number", `{"jsonrpc":"2.0","id":1,"method":5}`, CodeInvalidRequest, "1"},
		{"method as object", `{"jsonrpc":"2.0","id":1,"method":{"name":"tools/call"}}`, CodeInvalidRequest, "1"},
		{"id as object", `{"jsonrpc":"2.0","id":{},"method":"ping"}`, CodeInvalidRequest, ""},
		{"id as fraction", `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`, CodeInvalidRequest, ""},
		{"null id on a request", `{"jsonrpc":"2.0","id":null,"method":"ping"}`, CodeInvalidRequest, ""},
		{"params as string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"search"}`, CodeInvalidRequest, "1"},
		{"tool name as number", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}`, CodeInvalidParams, "1"},
		{"tool name missing", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}`, CodeInvalidParams, "1"},
		{"tool call with array params", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["search"]}`, CodeInvalidParams, "1"},
		{"resources/read without uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}`, CodeInvalidParams, "1"},
		{"method and result", `{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}`, CodeInvalidRequest, "1"},
		{"result and error", `{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`, CodeInvalidRequest, "1"},
		{"response without id", `{"jsonrpc":"2.0","result":{}}`, CodeInvalidRequest, ""},
		{"nothing", `{"jsonrpc":"2.0"}`, CodeInvalidRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parser{}.Parse(jsonHeader(), []byte(tc.body))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse error = %v, want an *Error", err)
			}
			if e.Code != tc.code || e.Status != http.StatusBadRequest || string(e.ID) != tc.id {
				t.Fatalf("got code=%d status=%d id=%s (%s); want code=%d status=400 id=%s", e.Code, e.Status, e.ID, e.Message, tc.code, tc.id)
			}
			checkErrorBody(t, e)
			if strings.Contains(string(e.Body()), "secret") {
				t.Fatalf("the refusal repeats the arguments: %s", e.Body())
			}
		})
	}
}

// checkErrorBody checks the JSON-RPC error response is valid JSON carrying e.
func checkErrorBody(t *testing.T, e *Error) {
	t.Helper()
	var resp struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(e.Body(), &resp); err != nil {
		t.Fatalf("error body %s: %v", e.Body(), err)
	}
	wantID := string(e.ID)
	if wantID == "" {
		wantID = "null"
	}
	if resp.JSONRPC != "2.0" || string(resp.ID) != wantID || resp.Error.Code != e.Code || resp.Error.Message != e.Message {
		t.Fatalf("error body %s does not carry %+v", e.Body(), e)
	}
}

func TestParseContentType(t *testing.T) {
	for _, ct := range []string{"application/json", "Application/JSON", "application/json; charset=utf-8", " application/json ;charset=UTF-8"} {
		if _, err := (Parser{}).Parse(http.Header{"Content-Type": {ct}}, []byte(callSearch)); err != nil {
			t.Errorf("Content-Type %q: %v", ct, err)
		}
	}
	for _, ct := range []string{"", "text/plain", "application/jsonx", "application/x-www-form-urlencoded", "text/event-stream"} {
		_, err := Parser{}.Parse(http.Header{"Content-Type": {ct}}, []byte(callSearch))
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusUnsupportedMediaType || e.Code != CodeInvalidRequest {
			t.Errorf("Content-Type %q: error %v, want 415", ct, err)
		}
		if err := CheckContentType(http.Header{"Content-Type": {ct}}); !errors.As(err, &e) || e.Status != http.StatusUnsupportedMediaType {
			t.Errorf("CheckContentType(%q) = %v, want 415", ct, err)
		}
	}
}

func TestReadBodyIsBounded(t *testing.T) {
	p := Parser{MaxBody: 64}
	body := []byte(strings.Repeat("x", 64))
	for _, cl := range []int64{-1, 64} {
		got, err := p.ReadBody(iotest.OneByteReader(bytes.NewReader(body)), cl)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("content length %d: ReadBody = %q, %v", cl, got, err)
		}
	}
	for _, cl := range []int64{-1, 10, 65} {
		r := &countingReader{r: bytes.NewReader(bytes.Repeat([]byte("y"), 10000))}
		_, err := p.ReadBody(r, cl)
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusRequestEntityTooLarge || !strings.Contains(e.Message, ErrBodyTooLarge.Error()) {
			t.Fatalf("content length %d: error %v, want 413", cl, err)
		}
		if r.n > 65 {
			t.Fatalf("content length %d: read %d bytes past a 64-byte bound", cl, r.n)
		}
	}
	if _, err := p.ReadBody(iotest.ErrReader(io.ErrUnexpectedEOF), -1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read error = %v", err)
	}
	if got, err := (Parser{}).ReadBody(bytes.NewReader(make([]byte, DefaultMaxBody)), -1); err != nil || len(got) != DefaultMaxBody {
		t.Fatalf("a 1 MiB body under the default bound: %d bytes, %v", len(got), err)
	}
	if _, err := (Parser{}).ReadBody(bytes.NewReader(make([]byte, DefaultMaxBody+1)), -1); err == nil {
		t.Fatal("a body past the default bound was read")
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestHeadersAgreeWithTheBody(t *testing.T) {
	read := `{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///ünï"}}`
	list := `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`
	for _, tc := range []struct {
		name    string
		body    string
		headers []string
		ok      bool
	}{
		{"no headers (earlier revisions)", callSearch, nil, true},
		{"both headers match", callSearch, []string{HeaderMethod, "tools/call", HeaderName, "search"}, true},
		{"lower-case header names", callSearch, []string{"mcp-method", "tools/call", "mcp-name", "search"}, true},
		{"optional white space", callSearch, []string{HeaderMethod, " tools/call\t", HeaderName, " search "}, true},
		{"base64 name", read, []string{HeaderMethod, "resources/read", HeaderName, "=?base64?ZmlsZTovLy/DvG7Drw==?="}, true},
		{"method only, where no name is needed", list, []string{HeaderMethod, "tools/list"}, true},
		{"method differs", callSearch, []string{HeaderMethod, "tools/list", HeaderName, "search"}, false},
		{"method differs in case", callSearch, []string{HeaderMethod, "Tools/Call", HeaderName, "search"}, false},
		{"name differs", callSearch, []string{HeaderMethod, "tools/call", HeaderName, "fetch"}, false},
		{"name differs in case", callSearch, []string{HeaderMethod, "tools/call", HeaderName, "Search"}, false},
		{"name missing where required", callSearch, []string{HeaderMethod, "tools/call"}, false},
		{"name without method", callSearch, []string{HeaderName, "search"}, false},
		{"name where the body has none", list, []string{HeaderMethod, "tools/list", HeaderName, "search"}, false},
		{"method twice", callSearch, []string{HeaderMethod, "tools/call", HeaderMethod, "tools/call", HeaderName, "search"}, false},
		{"non-ASCII header value", read, []string{HeaderMethod, "resources/read", HeaderName, "file:///ünï"}, false},
		{"bad base64", read, []string{HeaderMethod, "resources/read", HeaderName, "=?base64?!!!?="}, false},
		{"base64 of another name", callSearch, []string{HeaderMethod, "tools/call", HeaderName, "=?base64?ZmV0Y2g=?="}, false},
		{"method on a response", `{"jsonrpc":"2.0","id":1,"result":{}}`, []string{HeaderMethod, "tools/call"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parser{}.Parse(jsonHeader(tc.headers...), []byte(tc.body))
			if tc.ok {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeHeaderMismatch || e.Status != http.StatusBadRequest {
				t.Fatalf("Parse error = %v, want HeaderMismatch (-32020) with 400", err)
			}
			if string(e.ID) != string(m.ID) || m.ID == nil {
				t.Fatalf("the refusal carries id %s, want the request's %s", e.ID, m.ID)
			}
			checkErrorBody(t, e)
		})
	}
}

func TestHeaderValueBase64Sentinel(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                               "plain",
		"=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=": "=?base64?literal?=",
		"=?base64??=":                         "",
		"=?BASE64?cGxhaW4=?=":                 "=?BASE64?cGxhaW4=?=",
	} {
		got, ok := headerValue(in, true)
		if !ok || got != want {
			t.Errorf("headerValue(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := headerValue("=?base64?/w==?=", true); ok {
		t.Error("a Base64 value that is not UTF-8 was accepted")
	}
}

// TestParseHugeStrings checks strings up to the body bound are read, and the name
// is returned whole while the arguments are not kept.
func TestParseHugeStrings(t *testing.T) {
	big := strings.Repeat("a", 900_000)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + big + `","arguments":{"q":"` + strings.Repeat(`\"`, 40_000) + `"}}}`
	m, err := Parser{}.Parse(jsonHeader(HeaderMethod, "tools/call", HeaderName, big), []byte(body))
	if err != nil || m.Name != big {
		t.Fatalf("Parse: name of %d bytes, %v", len(m.Name), err)
	}
	p, err := Compile(Spec{Tools: []Rule{{Match: "search", Scopes: []string{"s"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide("s", &m); d.Allowed || p.ToolLabel(m.Name) != OtherLabel {
		t.Fatalf("a huge unlisted tool: %+v, label %.20q", d, p.ToolLabel(m.Name))
	}
	long := `{"jsonrpc":"2.0","id":1,"method":"` + strings.Repeat("m", 100_000) + `"}`
	if m, err := (Parser{}).Parse(jsonHeader(), []byte(long)); err != nil || len(m.Method) != 100_000 {
		t.Fatalf("long method: %d, %v", len(m.Method), err)
	}
}

func TestReplayHandsTheSameBytesOn(t *testing.T) {
	r, err := http.NewRequest(http.MethodPost, "http://mcp.test/mcp", io.NopCloser(strings.NewReader(callSearch)))
	if err != nil {
		t.Fatal(err)
	}
	r.ContentLength, r.TransferEncoding = -1, []string{"chunked"}
	body, err := Parser{}.ReadBody(r.Body, r.ContentLength)
	if err != nil {
		t.Fatal(err)
	}
	Replay(r, body)
	for i := range 2 {
		rc := r.Body
		if i == 1 {
			if rc, err = r.GetBody(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := io.ReadAll(rc)
		if err != nil || string(got) != callSearch {
			t.Fatalf("read %d: %q, %v", i, got, err)
		}
	}
	if r.ContentLength != int64(len(callSearch)) || r.TransferEncoding != nil || r.Header.Get("Content-Length") != strconv.Itoa(len(callSearch)) {
		t.Fatalf("length %d, transfer encoding %v, header %q", r.ContentLength, r.TransferEncoding, r.Header.Get("Content-Length"))
	}
}
