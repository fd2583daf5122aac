package caddymodules

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// demoMCPVersions are the MCP protocol revisions the demo server answers in; its
// surface (initialize, ping, tools/list, tools/call) is the same in each.
var demoMCPVersions = []string{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}

// demoTools is the demo server's tools/list result.
var demoTools = json.RawMessage(`{"tools":[` +
	`{"name":"search","description":"Search the demo catalogue.","inputSchema":{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}},` +
	`{"name":"fetch","description":"Fetch a demo document by id.","inputSchema":{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}},` +
	`{"name":"delete","description":"Delete a demo document by id (the demo agent is not granted it).","inputSchema":{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}}` +
	`]}`)

// serveDemoMCP is a minimal stateless MCP server over Streamable HTTP: each POST holds
// one JSON-RPC message and is answered with one JSON response (202 for a notification
// or a response). There is no server-initiated stream, so GET and DELETE get 405.
// A search with a "steps" argument (at most 600) from a client that accepts
// text/event-stream is answered as a stream instead: one notifications/message event
// per step, 100 ms apart, then the result, so that a revocation can cut a tool call
// under way.
func serveDemoMCP(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "this MCP server opens no server-initiated stream", http.StatusMethodNotAllowed)
		return nil
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			ProtocolVersion string         `json:"protocolVersion"`
			Name            string         `json:"name"`
			Arguments       map[string]any `json:"arguments"`
		} `json:"params"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&msg); err != nil {
		return writeDemoRPC(w, nil, nil, &demoRPCError{Code: -32700, Message: "the body is not a JSON-RPC message"})
	}
	if msg.ID == nil || msg.Method == "" {
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	switch msg.Method {
	case "initialize":
		version := demoMCPVersions[2]
		if slices.Contains(demoMCPVersions, msg.Params.ProtocolVersion) {
			version = msg.Params.ProtocolVersion
		}
		return writeDemoRPC(w, msg.ID, map[string]any{
			"protocolVersion": version,
			"capabilities":    map[string]any{"tools": map[string]any{}},
			"serverInfo":      map[string]any{"name": "caracal-demo", "version": "1"},
		}, nil)
	case "ping":
		return writeDemoRPC(w, msg.ID, map[string]any{}, nil)
	case "tools/list":
		return writeDemoRPC(w, msg.ID, demoTools, nil)
	case "tools/call":
		var text string
		switch msg.Params.Name {
		case "search":
			if steps, ok := msg.Params.Arguments["steps"].(float64); ok && steps >= 1 && strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
				return streamDemoSearch(w, r, msg.ID, min(int(steps), 600))
			}
			text = fmt.Sprintf("3 demo documents match %q: doc-1, doc-2, doc-3", fmt.Sprint(msg.Params.Arguments["query"]))
		case "fetch":
			text = fmt.Sprintf("document %q: a demo document", fmt.Sprint(msg.Params.Arguments["id"]))
		case "delete":
			text = fmt.Sprintf("document %q deleted (nothing is stored: this is the demo)", fmt.Sprint(msg.Params.Arguments["id"]))
		default:
			return writeDemoRPC(w, msg.ID, nil, &demoRPCError{Code: -32602, Message: "unknown tool"})
		}
		return writeDemoRPC(w, msg.ID, map[string]any{"content": []any{map[string]any{"type": "text", "text": text}}}, nil)
	}
	return writeDemoRPC(w, msg.ID, nil, &demoRPCError{Code: -32601, Message: "method not found"})
}

// streamDemoSearch answers a search as server-sent events: steps log messages, then
// the result.
func streamDemoSearch(w http.ResponseWriter, r *http.Request, id json.RawMessage, steps int) error {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 1; i <= steps; i++ {
		if _, err := fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"step %d of %d\"}}\n\n", i, steps); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-t.C:
		}
	}
	result, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "result": map[string]any{"content": []any{map[string]any{"type": "text", "text": fmt.Sprintf("searched in %d steps", steps)}}}})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "data: %s\n\n", result)
	return err
}

// demoRPCError is a JSON-RPC error object.
type demoRPCError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// writeDemoRPC writes a JSON-RPC response carrying result or rpcErr.
func writeDemoRPC(w http.ResponseWriter, id json.RawMessage, result any, rpcErr *demoRPCError) error {
	if id == nil {
		id = json.RawMessage("null")
	}
	resp := map[string]any{"jsonrpc": "2.0", "id": id}
	if rpcErr != nil {
		resp["error"] = rpcErr
	} else {
		resp["result"] = result
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(resp)
}
