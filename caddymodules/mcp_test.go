package caddymodules

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caracalgw/caracal/internal/mcprules"
	"github.com/caracalgw/caracal/internal/testenv"
	"github.com/caracalgw/caracal/mandate"
)

// mcpUpstream is a stub MCP server on loopback recording the bodies it receives:
// tools/list answers the tools search, fetch and delete as JSON, or as an event
// stream split in the middle of the listing when the path is /sse.
type mcpUpstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newMCPUpstream(t *testing.T) *mcpUpstream {
	u := &mcpUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.bodies = append(u.bodies, b)
		u.mu.Unlock()
		listing := bytes.Contains(b, []byte(`"tools/list"`))
		switch {
		case listing && r.URL.Path == "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			fl := w.(http.Flusher)
			io.WriteString(w, ": keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"search\"},")
			fl.Flush()
			io.WriteString(w, "{\"name\":\"delete\"},{\"name\":\"fetch\"}]}}\n\n")
		case listing:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"search"},{"name":"delete"},{"name":"fetch"}]}}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}`)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *mcpUpstream) received() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.bodies)
}

// proxyTo is the next handler: a reverse proxy to the upstream, flushing at once.
func proxyTo(t *testing.T, upstream string) func(http.ResponseWriter, *http.Request) error {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.FlushInterval = -1
	return func(w http.ResponseWriter, r *http.Request) error {
		p.ServeHTTP(w, r)
		return nil
	}
}

// mcpSetup builds a handler with the demo's rules in front of a stub upstream, a
// mandate carrying tool:search only, and an observed log.
func mcpSetup(t *testing.T, filter bool, maxBody int64) (h *Handler, up *mcpUpstream, srv *httptest.Server, client *http.Client, token string, claims *mandate.Claims, logs *observer.ObservedLogs) {
	f := newFixture(t)
	h = f.newHandler(t, &Handler{MCP: &MCPConfig{
		Spec: mcprules.Spec{
			Tools: []mcprules.Rule{
				{Match: "search", Scopes: []string{"tool:search"}},
				{Match: "fetch", Scopes: []string{"tool:fetch"}},
				{Match: "delete", Scopes: []string{"tool:delete"}},
				{Match: "admin_*", Scopes: []string{"deny"}},
			},
			Methods: []mcprules.Rule{
				{Match: "initialize", Scopes: []string{"allow"}},
				{Match: "notifications/*", Scopes: []string{"allow"}},
				{Match: "tools/list", Scopes: []string{"allow"}},
			},
		},
		MaxBody:     maxBody,
		FilterTools: filter,
	}})
	core, obs := observer.New(zapcore.InfoLevel)
	h.logger = zap.New(core)
	up = newMCPUpstream(t)
	srv, client = serve(t, h, proxyTo(t, up.srv.URL), false)
	token, claims = f.token(t, func(c *mandate.Claims) { c.Scope = "tool:search" })
	return h, up, srv, client, token, claims, obs
}

func postMCP(t *testing.T, client *http.Client, url, token, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestMCPAllowedCallReachesTheUpstreamByteForByte(t *testing.T) {
	h, up, srv, client, token, _, logs := mcpSetup(t, false, 0)
	before := counterValue(t, h.metrics.mcpMessages.WithLabelValues("tools/call", "search", "allowed"))
	body := "{ \"jsonrpc\":\"2.0\", \"id\":1,\n \"method\":\"tools/call\",\"params\":{\"name\":\"search\",\"arguments\":{\"q\":\"caf\\u00e9\"}}} "
	resp, got := postMCP(t, client, srv.URL+"/mcp", token, body, mcprules.HeaderMethod, "tools/call", mcprules.HeaderName, "search")
	if resp.StatusCode != http.StatusOK || !strings.Contains(got, `"text":"ok"`) {
		t.Fatalf("status %d, body %s", resp.StatusCode, got)
	}
	if rec := up.received(); len(rec) != 1 || string(rec[0]) != body {
		t.Fatalf("upstream received %q", rec)
	}
	if counterValue(t, h.metrics.mcpMessages.WithLabelValues("tools/call", "search", "allowed"))-before != 1 {
		t.Fatal("the allowed call was not counted")
	}
	if logs.Len() != 0 {
		t.Fatalf("an allowed call is logged: %v", logs.All())
	}
	// A GET (the server's event stream) is not a JSON-RPC message: it passes on.
	if resp, _ := get(t, client, srv.URL+"/mcp", "Bearer "+token); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: status %d", resp.StatusCode)
	}
	// A message under another method is checked all the same.
	for _, method := range []string{http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodGet} {
		req, _ := http.NewRequest(method, srv.URL+"/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"delete"}}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s with a refused message: status %d", method, resp.StatusCode)
		}
	}
	if n := len(up.received()); n != 2 {
		t.Fatalf("the upstream received %d requests, want the call and the GET", n)
	}
}

func TestMCPRefusedCallGetsTheStepUpChallenge(t *testing.T) {
	h, up, srv, client, token, claims, logs := mcpSetup(t, false, 0)
	before := counterValue(t, h.metrics.mcpMessages.WithLabelValues("tools/call", "delete", "insufficient_scope"))
	resp, body := postMCP(t, client, srv.URL+"/mcp", token, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete","arguments":{"path":"/secret"}}}`)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	ch := resp.Header.Get("WWW-Authenticate")
	for _, part := range []string{`Bearer realm="`, `error="insufficient_scope"`, `error_description="tool delete needs tool:delete"`, `scope="tool:delete"`, `resource_metadata="` + testMetadataURL + `"`} {
		if !strings.Contains(ch, part) {
			t.Fatalf("challenge %q lacks %s", ch, part)
		}
	}
	var rpc struct {
		ID    int `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    struct {
				Tool    string   `json:"tool"`
				Missing []string `json:"missing_scopes"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &rpc); err != nil || rpc.ID != 7 || rpc.Error.Code != mcprules.CodeInsufficientScope ||
		rpc.Error.Data.Tool != "delete" || !slices.Equal(rpc.Error.Data.Missing, []string{"tool:delete"}) {
		t.Fatalf("body %s (%v)", body, err)
	}
	if len(up.received()) != 0 {
		t.Fatal("a refused call reached the upstream")
	}
	if counterValue(t, h.metrics.mcpMessages.WithLabelValues("tools/call", "delete", "insufficient_scope"))-before != 1 {
		t.Fatal("the refusal was not counted")
	}
	entries := logs.All()
	if len(entries) != 1 || entries[0].Level != zapcore.InfoLevel {
		t.Fatalf("log %v", entries)
	}
	fields := entries[0].ContextMap()
	want := map[string]any{"zone": claims.ZoneID, "client": claims.ClientID, "sid": claims.SID, "method": "tools/call", "tool": "delete", "reason": "tool delete needs tool:delete", "status": int64(403)}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("log field %s = %v, want %v", k, fields[k], v)
		}
	}
	if strings.Contains(entries[0].Message+strings.Join(slices.Collect(mapValues(fields)), " "), "secret") {
		t.Fatal("the arguments are logged")
	}

	// A deny rule: no scope would help, so the challenge names none; an unlisted tool
	// falls to the default (deny) and is counted under "other".
	for _, tool := range []string{"admin_wipe", "unlisted"} {
		resp, body = postMCP(t, client, srv.URL+"/mcp", token, `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"`+tool+`"}}`)
		if resp.StatusCode != http.StatusForbidden || strings.Contains(resp.Header.Get("WWW-Authenticate"), "scope=") || !strings.Contains(body, "is not permitted") {
			t.Fatalf("%s: status %d, challenge %q, body %s", tool, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	}
	if counterValue(t, h.metrics.mcpMessages.WithLabelValues("tools/call", "admin_*", "denied")) < 1 ||
		counterValue(t, h.metrics.mcpMessages.WithLabelValues("tools/call", "other", "denied")) < 1 {
		t.Fatal("denials not counted under bounded labels")
	}
}

func mapValues(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if s, ok := v.(string); ok && !yield(s) {
				return
			}
		}
	}
}

func TestMCPMalformedMessagesAreRefusedBeforeTheUpstream(t *testing.T) {
	h, up, srv, client, token, _, logs := mcpSetup(t, false, 256)
	cases := []struct {
		name, body string
		header     []string
		status     int
		code       int
		outcome    string
	}{
		{"header mismatch", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search"}}`,
			[]string{mcprules.HeaderMethod, "tools/call", mcprules.HeaderName, "fetch"}, 400, mcprules.CodeHeaderMismatch, "header_mismatch"},
		{"batch", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}]`, nil, 400, mcprules.CodeInvalidRequest, "invalid"},
		{"oversized body", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"` + strings.Repeat("x", 300) + `"}}}`, nil, 413, mcprules.CodeInvalidRequest, "too_large"},
		{"invalid JSON", `{"jsonrpc":"2.0",`, nil, 400, mcprules.CodeParseError, "invalid"},
		{"wrong content type", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, []string{"Content-Type", "text/plain"}, 415, mcprules.CodeInvalidRequest, "invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := logs.Len()
			resp, body := postMCP(t, client, srv.URL+"/mcp", token, c.body, c.header...)
			var rpc struct {
				Error struct{ Code int } `json:"error"`
			}
			if resp.StatusCode != c.status || json.Unmarshal([]byte(body), &rpc) != nil || rpc.Error.Code != c.code ||
				resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			if logs.Len() != n+1 {
				t.Fatal("the refusal is not logged")
			}
		})
	}
	if len(up.received()) != 0 {
		t.Fatalf("the upstream received %q", up.received())
	}
	if counterValue(t, h.metrics.mcpMessages.WithLabelValues("tools/call", "search", "header_mismatch")) != 1 ||
		counterValue(t, h.metrics.mcpMessages.WithLabelValues("", "", "too_large")) != 1 {
		t.Fatal("refusals not counted by outcome")
	}
	// A notification follows the method rules.
	resp, _ := postMCP(t, client, srv.URL+"/mcp", token, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	if resp.StatusCode != http.StatusOK || len(up.received()) != 1 {
		t.Fatalf("notification: status %d", resp.StatusCode)
	}
}

func TestMCPToolsListShowsOnlyCallableTools(t *testing.T) {
	h, _, srv, client, token, _, _ := mcpSetup(t, true, 0)
	names := func(t *testing.T, doc string) []string {
		t.Helper()
		var v struct {
			Result struct {
				Tools []struct{ Name string } `json:"tools"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatalf("%v: %s", err, doc)
		}
		var out []string
		for _, tl := range v.Result.Tools {
			out = append(out, tl.Name)
		}
		return out
	}
	t.Run("JSON", func(t *testing.T) {
		before := counterValue(t, h.metrics.mcpToolsHidden)
		resp, body := postMCP(t, client, srv.URL+"/mcp", token, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
		if resp.StatusCode != http.StatusOK || !slices.Equal(names(t, body), []string{"search"}) {
			t.Fatalf("status %d, body %s", resp.StatusCode, body)
		}
		if counterValue(t, h.metrics.mcpToolsHidden)-before != 2 {
			t.Fatal("hidden tools not counted")
		}
	})
	t.Run("SSE split across writes", func(t *testing.T) {
		resp, body := postMCP(t, client, srv.URL+"/sse", token, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, body %s", resp.StatusCode, body)
		}
		var events []string
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events = append(events, data)
			}
		}
		if !strings.HasPrefix(body, ": keep-alive\n\n") || len(events) != 1 || !slices.Equal(names(t, events[0]), []string{"search"}) {
			t.Fatalf("stream %q", body)
		}
	})
	t.Run("off", func(t *testing.T) {
		_, _, srv, client, token, _, _ := mcpSetup(t, false, 0)
		_, body := postMCP(t, client, srv.URL+"/mcp", token, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
		if !slices.Equal(names(t, body), []string{"search", "delete", "fetch"}) {
			t.Fatalf("body %s", body)
		}
	})
}

func TestCaddyfileReadsTheMCPBlock(t *testing.T) {
	h, err := parse(`caracal_mandate {
		resource https://localhost:8443/mcp
		resource_metadata https://localhost:8443/.well-known/oauth-protected-resource/mcp
		mcp {
			method tools/list allow
			tool search tool:search
			tool fetch tool:fetch
			default deny
			max_body 64KiB
			filter_tools on
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := MCPConfig{Spec: mcprules.Spec{
		Tools:   []mcprules.Rule{{Match: "search", Scopes: []string{"tool:search"}}, {Match: "fetch", Scopes: []string{"tool:fetch"}}},
		Methods: []mcprules.Rule{{Match: "tools/list", Scopes: []string{"allow"}}},
		Default: []string{"deny"},
	}, MaxBody: 64 << 10, FilterTools: true}
	got, _ := json.Marshal(h.MCP)
	if string(got) != string(must(json.Marshal(want))) || h.ResourceMetadata != "https://localhost:8443/.well-known/oauth-protected-resource/mcp" {
		t.Fatalf("mcp %s, resource_metadata %q", got, h.ResourceMetadata)
	}
	if !strings.Contains(string(got), `"tools":[{"match":"search"`) || !strings.Contains(string(got), `"filter_tools":true`) {
		t.Fatalf("JSON form %s", got)
	}
	for src, msg := range map[string]string{
		"mcp {\n max_body 1KiB\n max_body 2KiB\n }":       "given twice",
		"mcp {\n filter_tools maybe\n }":                  "on or off",
		"mcp {\n frobnicate\n }":                          "unknown subdirective",
		"mcp {\n tool search\n }":                         "needs a pattern and scopes",
		"mcp {\n max_body lots\n }":                       "positive size",
		"mcp {\n default deny\n default allow\n }":        "given twice",
		"mcp {\n tool search tool:search\n }\n mcp {\n }": "given twice",
	} {
		if _, err := parse("caracal_mandate {\n" + src + "\n}"); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%q: %v, want %q", src, err, msg)
		}
	}
}

// TestMCPFilteredListingIsCutOnRevocation: the tools/list filter writes into the
// revocation guard, so a revocation still ends a streamed listing that is under way.
func TestMCPFilteredListingIsCutOnRevocation(t *testing.T) {
	f := newFixture(t)
	h := f.newHandler(t, &Handler{MCP: &MCPConfig{Spec: mcprules.Spec{
		Tools:   []mcprules.Rule{{Match: "search", Scopes: []string{"tool:search"}}},
		Methods: []mcprules.Rule{{Match: "tools/list", Scopes: []string{"allow"}}},
	}, FilterTools: true}})
	ended := make(chan error, 1)
	srv, client := serve(t, h, func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"delete\"}]}}\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
		<-r.Context().Done()
		ended <- r.Context().Err()
		return nil
	}, false)
	tok, c := f.token(t, func(c *mandate.Claims) { c.Scope = "tool:search" })
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"search\"}]}}\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	f.armWatch(t)
	f.revoke(t, h, c.SID)
	_, err = testenv.BodyEnd(t, br)
	testenv.AssertAborted(t, err, false)
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the upstream's request ended with %v, want context.Canceled", err)
	}
}

// TestToolsFilterPassesAnswersThatAreNoListing: only a 200 is filtered, so an empty
// 202 or an error status is passed on as it is and does not fail the response.
func TestToolsFilterPassesAnswersThatAreNoListing(t *testing.T) {
	h := &Handler{mcp: &mcpRoute{policy: must2(mcprules.Compile(mcprules.Spec{Default: []string{"deny"}}))}, metrics: registerMetrics(nil)}
	for _, c := range []struct {
		status int
		body   string
	}{{http.StatusAccepted, ""}, {http.StatusBadGateway, "upstream down"}, {http.StatusOK, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x"}]}}`}} {
		rec := httptest.NewRecorder()
		tf := h.newToolsFilter(rec, "")
		tf.Header().Set("Content-Type", "application/json")
		tf.WriteHeader(c.status)
		io.WriteString(tf, c.body)
		if err := tf.close(); err != nil {
			t.Fatalf("%d: %v", c.status, err)
		}
		want := c.body
		if c.status == http.StatusOK {
			want = `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`
		}
		if rec.Code != c.status || rec.Body.String() != want {
			t.Errorf("%d: got %d %q, want %q", c.status, rec.Code, rec.Body, want)
		}
	}
}

func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
