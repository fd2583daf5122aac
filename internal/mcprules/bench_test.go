package mcprules

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// benchCall is a tools/call as an MCP client of the 2026-07-28 revision posts it.
const benchCall = `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search",` +
	`"arguments":{"query":"quarterly revenue by region","limit":20,"filters":{"year":2026,"tags":["finance","emea"]}},` +
	`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1.0.0"},` +
	`"io.modelcontextprotocol/clientCapabilities":{}}}}`

func benchHeader() http.Header {
	return http.Header{
		"Content-Type": {"application/json"},
		HeaderMethod:   {"tools/call"},
		HeaderName:     {"search"},
	}
}

// BenchmarkParseToolsCall is the per-request cost of extraction: reading the body
// into one buffer, classifying it and checking the metadata headers.
func BenchmarkParseToolsCall(b *testing.B) {
	h := benchHeader()
	body := []byte(benchCall)
	var p Parser
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m, err := p.Parse(h, body)
		if err != nil || m.Name != "search" {
			b.Fatal(m, err)
		}
	}
}

// BenchmarkReadParseDecideToolsCall adds reading the body and the rule decision.
func BenchmarkReadParseDecideToolsCall(b *testing.B) {
	h := benchHeader()
	pol, err := Compile(Spec{
		Tools:   []Rule{{Match: "search", Scopes: []string{"tool:search"}}, {Match: "fetch", Scopes: []string{"tool:fetch"}}, {Match: "fs_*", Scopes: []string{"fs"}}},
		Methods: []Rule{{Match: "tools/list", Scopes: []string{"allow"}}, {Match: "initialize", Scopes: []string{"allow"}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	var p Parser
	r := strings.NewReader(benchCall)
	b.SetBytes(int64(len(benchCall)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(benchCall)
		body, err := p.ReadBody(r, int64(len(benchCall)))
		if err != nil {
			b.Fatal(err)
		}
		m, err := p.Parse(h, body)
		if err != nil {
			b.Fatal(err)
		}
		if d := pol.Decide("tool:fetch tool:search", &m); !d.Allowed {
			b.Fatal(d)
		}
	}
}

// BenchmarkSSEFilterListing filters a 50-tool listing event written in 4 KiB
// chunks.
func BenchmarkSSEFilterListing(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`data: {"jsonrpc":"2.0","id":1,"result":{"tools":[`)
	for i := range 50 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"name":"tool_` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `","description":"A tool that does a thing with a reasonably long description.","inputSchema":{"type":"object","properties":{"q":{"type":"string"}}}}`)
	}
	sb.WriteString("]}}\n\n")
	stream := []byte(sb.String())
	keep := func(name string) bool { return name[len(name)-1] == 'a' }
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewSSEFilter(io.Discard, keep, 0)
		for s := stream; len(s) > 0; {
			n := min(4096, len(s))
			if _, err := f.Write(s[:n]); err != nil {
				b.Fatal(err)
			}
			s = s[n:]
		}
	}
}

// BenchmarkDecodeToolsCallEncodingJSON is a point of reference: encoding/json
// decoding the same fields, without the validation Parse adds.
func BenchmarkDecodeToolsCallEncodingJSON(b *testing.B) {
	body := []byte(benchCall)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var m struct {
			Method string          `json:"method"`
			ID     json.RawMessage `json:"id"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		if err := json.Unmarshal(body, &m); err != nil || m.Params.Name != "search" {
			b.Fatal(err)
		}
	}
}
