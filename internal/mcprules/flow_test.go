package mcprules

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
)

// gateway composes the core the way the caracal_mandate wiring is meant to: read the
// body, parse, decide, replay the body to a reverse proxy, and filter tools/list.
func gateway(t *testing.T, upstream string, pol *Policy, granted string) http.Handler {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.FlushInterval = -1
	var parser Parser
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(e *Error) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(e.Status)
			w.Write(e.Body())
		}
		if err := CheckContentType(r.Header); err != nil {
			refuse(err.(*Error))
			return
		}
		body, err := parser.ReadBody(r.Body, r.ContentLength)
		if err != nil {
			refuse(err.(*Error))
			return
		}
		m, err := parser.Parse(r.Header, body)
		if err != nil {
			refuse(err.(*Error))
			return
		}
		if d := pol.Decide(granted, &m); !d.Allowed {
			w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+d.Scope()+`"`)
			refuse(d.Refusal(m.ID))
			return
		}
		Replay(r, body)
		if m.Method == "tools/list" {
			keep := func(name string) bool { return pol.MayCall(granted, name) }
			sw := &sseResponse{ResponseWriter: w, keep: keep}
			proxy.ServeHTTP(sw, r)
			if sw.filter != nil {
				if err := sw.filter.Close(); err != nil {
					t.Errorf("filter: %v", err)
				}
			}
			return
		}
		proxy.ServeHTTP(w, r)
	})
}

// sseResponse routes a text/event-stream body through an SSEFilter.
type sseResponse struct {
	http.ResponseWriter
	keep   func(string) bool
	filter *SSEFilter
}

func (s *sseResponse) WriteHeader(code int) {
	if strings.HasPrefix(s.Header().Get("Content-Type"), "text/event-stream") {
		s.Header().Del("Content-Length")
		s.filter = NewSSEFilter(s.ResponseWriter, s.keep, 0)
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *sseResponse) Write(p []byte) (int, error) {
	if s.filter != nil {
		return s.filter.Write(p)
	}
	return s.ResponseWriter.Write(p)
}

func (s *sseResponse) Flush() { s.ResponseWriter.(http.Flusher).Flush() }

// TestCoreFlowOverHTTP runs the core between a real client and a stub MCP server:
// an allowed call reaches the upstream byte for byte, a refused one never reaches
// it and gets the challenge, and a streamed listing shows only callable tools.
func TestCoreFlowOverHTTP(t *testing.T) {
	var mu sync.Mutex
	var received [][]byte
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		received = append(received, b)
		mu.Unlock()
		if strings.Contains(string(b), `"tools/list"`) {
			w.Header().Set("Content-Type", "text/event-stream")
			fl := w.(http.Flusher)
			io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n")
			fl.Flush()
			io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"search\"},")
			fl.Flush()
			io.WriteString(w, "{\"name\":\"delete\"},{\"name\":\"fetch\"}]}}\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	}))
	defer upstream.Close()
	pol, err := Compile(Spec{
		Tools:   []Rule{{Match: "search", Scopes: []string{"tool:search"}}, {Match: "fetch", Scopes: []string{"tool:fetch"}}, {Match: "delete", Scopes: []string{"tool:delete"}}},
		Methods: []Rule{{Match: "tools/list", Scopes: []string{Allow}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(gateway(t, upstream.URL, pol, "tool:search tool:fetch"))
	defer gw.Close()

	bodies := func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(received)
	}
	post := func(body string, headers ...string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, gw.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := gw.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	allowed := "{ \"jsonrpc\" : \"2.0\", \"id\":1,\n\"method\":\"tools/call\",\"params\":{\"name\":\"search\",\"arguments\":{\"q\":\"\\u00e9\"}}}  "
	resp := post(allowed, HeaderMethod, "tools/call", HeaderName, "search")
	resp.Body.Close()
	got := bodies()
	if resp.StatusCode != http.StatusOK || len(got) != 1 || !bytes.Equal(got[0], []byte(allowed)) {
		t.Fatalf("allowed call: status %d, upstream got %q", resp.StatusCode, got)
	}

	resp = post(`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"delete"}}`)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got = bodies()
	if resp.StatusCode != http.StatusForbidden || len(got) != 1 ||
		resp.Header.Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="tool:delete"` ||
		!strings.Contains(string(b), `"id":5,"error":{"code":-31403,"message":"tool \"delete\" needs the scope tool:delete"`) {
		t.Fatalf("refused call: status %d, challenge %q, body %s, upstream calls %d", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b, len(got))
	}

	resp = post(`{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"search"}}`, HeaderMethod, "tools/call", HeaderName, "fetch")
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"code":-32020`) || len(bodies()) != 1 {
		t.Fatalf("mismatch: status %d, body %s", resp.StatusCode, b)
	}

	resp = post(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, HeaderMethod, "tools/list")
	defer resp.Body.Close()
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, data)
		}
	}
	if len(events) != 2 {
		t.Fatalf("events %q", events)
	}
	if names := toolNames(t, []byte(events[1])); !slices.Equal(names, []string{"search", "fetch"}) {
		t.Fatalf("listed %v", names)
	}
}
