package caddymodules

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caracalgw/caracal/internal/caddyfileopts"
	"github.com/caracalgw/caracal/internal/mcprules"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/verify"
)

// MCPConfig makes a route MCP-aware (docs/mcp.md): every POST, once its mandate is
// verified, is parsed as a Streamable HTTP JSON-RPC message and must carry the scopes
// that the rules ask for its method and tool.
type MCPConfig struct {
	mcprules.Spec
	// MaxBody bounds the request body in bytes (default 1 MiB).
	MaxBody int64 `json:"max_body,omitempty"`
	// FilterTools removes from tools/list responses the tools the mandate may not call.
	FilterTools bool `json:"filter_tools,omitempty"`
}

// mcpRoute is the provisioned form of an MCPConfig.
type mcpRoute struct {
	policy *mcprules.Policy
	parser mcprules.Parser
	filter bool
}

// scopes returns every scope the rules name, in declaration order.
func (c *MCPConfig) scopes() []string {
	var all [][]string
	for _, r := range c.Tools {
		all = append(all, r.Scopes)
	}
	for _, r := range c.Methods {
		all = append(all, r.Scopes)
	}
	return scopesOf(nil, append(all, c.Default)...)
}

// compile checks c and builds its route.
func (c *MCPConfig) compile() (*mcpRoute, error) {
	if c.MaxBody < 0 {
		return nil, errors.New("mcp: max_body must be positive")
	}
	p, err := mcprules.Compile(c.Spec)
	if err != nil {
		return nil, err
	}
	return &mcpRoute{policy: p, parser: mcprules.Parser{MaxBody: c.MaxBody}, filter: c.FilterTools}, nil
}

// unmarshalCaddyfile reads the mcp block:
//
//	mcp {
//		tool    <name or glob>   <scope...> | allow | deny
//		method  <method or glob> <scope...> | allow | deny
//		default <scope...> | allow | deny
//		max_body     <size>
//		filter_tools on | off
//	}
//
// tool and method repeat; the others are given at most once.
func (c *MCPConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("mcp takes a block, not %q", d.Val())
	}
	seen := caddyfileopts.NewSeen("mcp", "tool", "method")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.Add(d); err != nil {
			return err
		}
		name := d.Val()
		switch name {
		case "tool", "method", "default":
			args := append([]string{name}, d.RemainingArgs()...)
			if len(args) == 1 {
				return caddyfileopts.Empty(d, name)
			}
			if err := c.AddDirective(args); err != nil {
				return d.Errf("mcp: %v", err)
			}
		case "max_body":
			var s string
			if err := caddyfileopts.String(d, &s); err != nil {
				return err
			}
			n, err := humanize.ParseBytes(s)
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("mcp: max_body takes a positive size (1048576, 1MiB, 512KB), got %q", s)
			}
			c.MaxBody = int64(n)
		case "filter_tools":
			var on *bool
			if err := caddyfileopts.OnOff(d, &on); err != nil {
				return err
			}
			c.FilterTools = *on
		default:
			return seen.Unknown(d)
		}
	}
	return nil
}

// carriesMessage reports whether r must be read as a JSON-RPC message: a POST, and any
// request with a body, whatever its method, so that a server lenient about methods
// cannot be handed an unchecked message. A GET (the server's event stream), DELETE
// (the end of a session), HEAD or OPTIONS without a body is not one.
func carriesMessage(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete:
		return r.ContentLength != 0
	}
	return true
}

// mcpOutcome is the outcome label of a refused message's error.
func mcpOutcome(e *mcprules.Error) string {
	switch {
	case e.Status == http.StatusRequestEntityTooLarge:
		return "too_large"
	case e.Code == mcprules.CodeHeaderMismatch:
		return "header_mismatch"
	}
	return "invalid"
}

// checkMCP runs the route's rules on a request whose mandate claims verified: it reads
// and parses the body, decides, and either puts the body back for the next handler
// and returns the message, or answers the refusal itself and returns ok false.
func (h *Handler) checkMCP(w http.ResponseWriter, r *http.Request, claims *mandate.Claims) (m mcprules.Message, ok bool) {
	rt := h.mcp
	var perr error
	if perr = mcprules.CheckContentType(r.Header); perr == nil {
		var body []byte
		if body, perr = rt.parser.ReadBody(r.Body, r.ContentLength); perr == nil {
			if m, perr = rt.parser.Parse(r.Header, body); perr == nil {
				d := rt.policy.Decide(claims.Scope, &m)
				method, tool := rt.policy.MethodLabel(m.Method), ""
				if m.Method == "tools/call" {
					tool = rt.policy.ToolLabel(m.Name)
				}
				if d.Allowed {
					h.metrics.mcpMessages.WithLabelValues(method, tool, "allowed").Inc()
					mcprules.Replay(r, body)
					return m, true
				}
				outcome := "insufficient_scope"
				if d.Denied {
					outcome = "denied"
				}
				h.metrics.mcpMessages.WithLabelValues(method, tool, outcome).Inc()
				e := d.Refusal(m.ID)
				h.auditMCP(claims, &m, d.Reason(), e.Status)
				// The description names the refusing rule (configuration, never the client's
				// text) and the missing scopes.
				ve := &verify.Error{Status: http.StatusForbidden, Code: "insufficient_scope", Description: d.Reason(), Scope: d.Scope()}
				h.metadata.setErrorHeaders(w.Header(), h.verifier.Realm(), ve)
				writeRPCError(w, e)
				return m, false
			}
		}
	}
	var e *mcprules.Error
	if !errors.As(perr, &e) {
		// The body could not be read: the client went away or sent a broken stream.
		http.Error(w, "reading the request body failed", http.StatusBadRequest)
		return m, false
	}
	method, tool := "", ""
	if m.Method != "" {
		method = rt.policy.MethodLabel(m.Method)
	}
	if m.Method == "tools/call" && m.Name != "" {
		tool = rt.policy.ToolLabel(m.Name)
	}
	h.metrics.mcpMessages.WithLabelValues(method, tool, mcpOutcome(e)).Inc()
	h.auditMCP(claims, &m, e.Message, e.Status)
	w.Header().Set("Cache-Control", "no-store")
	writeRPCError(w, e)
	return m, false
}

// writeRPCError writes e as a JSON-RPC error response with e's status.
func writeRPCError(w http.ResponseWriter, e *mcprules.Error) {
	body := e.Body()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

// auditMCP logs one refused MCP message: who sent it, what it asked, and why it was
// refused; never its arguments.
func (h *Handler) auditMCP(c *mandate.Claims, m *mcprules.Message, reason string, status int) {
	if ce := h.logger.Check(zapcore.InfoLevel, "mcp message refused"); ce != nil {
		ce.Write(zap.String("zone", c.ZoneID), zap.String("client", c.ClientID), zap.String("sid", c.SID),
			zap.String("method", m.Method), zap.String("tool", m.Name), zap.String("reason", reason), zap.Int("status", status))
	}
}

// toolsFilter is the response writer of a tools/list call on a filter_tools route: it
// routes a JSON or event-stream body through the matching mcprules filter, which
// writes into the revocation guard's writer.
type toolsFilter struct {
	http.ResponseWriter
	keep   func(string) bool
	filter interface {
		Write([]byte) (int, error)
		Close() error
	}
	wroteHeader bool
}

// newToolsFilter wraps w (the guard's writer) for a mandate carrying granted.
func (h *Handler) newToolsFilter(w http.ResponseWriter, granted string) *toolsFilter {
	pol, hidden := h.mcp.policy, h.metrics.mcpToolsHidden
	return &toolsFilter{ResponseWriter: w, keep: func(name string) bool {
		if pol.MayCall(granted, name) {
			return true
		}
		hidden.Inc()
		return false
	}}
}

// WriteHeader picks the filter from the Content-Type of a 200 response. The filtered
// body has another length, so Content-Length is dropped.
func (t *toolsFilter) WriteHeader(code int) {
	if t.wroteHeader {
		return
	}
	if code >= 100 && code < 200 {
		t.ResponseWriter.WriteHeader(code)
		return
	}
	t.wroteHeader = true
	ct, _, _ := strings.Cut(t.Header().Get("Content-Type"), ";")
	if code != http.StatusOK {
		// A listing comes with 200; other answers (errors, 202) carry no tools.
		ct = ""
	}
	switch strings.ToLower(strings.TrimSpace(ct)) {
	case "text/event-stream":
		t.filter = mcprules.NewSSEFilter(flushingWriter{t.ResponseWriter}, t.keep, 0)
	case "application/json":
		t.filter = mcprules.NewJSONFilter(flushingWriter{t.ResponseWriter}, t.keep, 0)
	}
	if t.filter != nil {
		t.Header().Del("Content-Length")
	}
	t.ResponseWriter.WriteHeader(code)
}

// Write sends p through the filter.
func (t *toolsFilter) Write(p []byte) (int, error) {
	if !t.wroteHeader {
		t.WriteHeader(http.StatusOK)
	}
	if t.filter == nil {
		return t.ResponseWriter.Write(p)
	}
	return t.filter.Write(p)
}

// FlushError pushes what the filter has forwarded on, through the guard (for which a
// flushed response is a stream to watch).
func (t *toolsFilter) FlushError() error {
	return http.NewResponseController(t.ResponseWriter).Flush()
}

// flushingWriter gives the guard's writer, which flushes through
// http.ResponseController, the http.Flusher the mcprules filters flush by.
type flushingWriter struct{ http.ResponseWriter }

// Flush flushes through the controller; an error shows on the next Write.
func (f flushingWriter) Flush() { _ = http.NewResponseController(f.ResponseWriter).Flush() }

// close ends the filter: a JSON listing is written now. An error means the client
// got a partial or no listing.
func (t *toolsFilter) close() error {
	if t.filter == nil {
		return nil
	}
	return t.filter.Close()
}
