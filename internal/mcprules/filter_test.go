package mcprules

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

const listing = `{"jsonrpc":"2.0","id":1,"result":{"tools":[` +
	`{"name":"search","description":"Search","inputSchema":{"type":"object"}},` +
	`{"name":"delete","inputSchema":{"type":"object","properties":{"name":{"type":"string"}}}},` +
	`{"name":"fetch","description":"say \"name\": \"delete\""}` +
	`],"nextCursor":"c2"}}`

func keepOnly(names ...string) func(string) bool {
	return func(n string) bool { return slices.Contains(names, n) }
}

// toolNames decodes a tools/list result with encoding/json and lists its names.
func toolNames(t *testing.T, doc []byte) []string {
	t.Helper()
	var resp struct {
		Result struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
			NextCursor string `json:"nextCursor"`
		} `json:"result"`
	}
	if err := json.Unmarshal(doc, &resp); err != nil {
		t.Fatalf("filtered document %s: %v", doc, err)
	}
	names := []string{}
	for _, tool := range resp.Result.Tools {
		names = append(names, tool.Name)
	}
	return names
}

func TestFilterToolsList(t *testing.T) {
	out, changed, err := FilterToolsList([]byte(listing), keepOnly("search", "fetch"))
	if err != nil || !changed {
		t.Fatalf("FilterToolsList: changed=%v err=%v", changed, err)
	}
	want := strings.Replace(listing, `{"name":"delete","inputSchema":{"type":"object","properties":{"name":{"type":"string"}}}},`, "", 1)
	if string(out) != want {
		t.Fatalf("filtered:\n%s\nwant:\n%s", out, want)
	}
	if got := toolNames(t, out); !slices.Equal(got, []string{"search", "fetch"}) {
		t.Fatalf("names = %v", got)
	}

	out, _, _ = FilterToolsList([]byte(listing), keepOnly())
	if got := toolNames(t, out); len(got) != 0 || !strings.Contains(string(out), `"tools":[]`) || !strings.Contains(string(out), `"nextCursor":"c2"`) {
		t.Fatalf("nothing kept: %s", out)
	}
	out, _, _ = FilterToolsList([]byte(listing), keepOnly("fetch"))
	if got := toolNames(t, out); !slices.Equal(got, []string{"fetch"}) {
		t.Fatalf("last kept: %s", out)
	}

	// Everything kept: the very same bytes come back.
	out, changed, err = FilterToolsList([]byte(listing), keepOnly("search", "delete", "fetch"))
	if err != nil || changed || string(out) != listing {
		t.Fatalf("all kept: changed=%v err=%v", changed, err)
	}
}

func TestFilterToolsListHostileListings(t *testing.T) {
	keep := keepOnly("search")
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"duplicate name key", `{"result":{"tools":[{"name":"search","name":"delete"}]}}`, []string{}},
		{"name as number", `{"result":{"tools":[{"name":1},{"name":"search"}]}}`, []string{"search"}},
		{"entry not an object", `{"result":{"tools":["search",{"name":"search"}]}}`, []string{"search"}},
		{"no name", `{"result":{"tools":[{"title":"search"}]}}`, []string{}},
		{"escaped name", `{"result":{"tools":[{"n\u0061me":"se\u0061rch"},{"name":"d\u0065lete"}]}}`, []string{"search"}},
		{"pretty printed", "{\n \"result\": {\n  \"tools\": [\n   {\"name\": \"delete\"},\n   {\"name\": \"search\"}\n  ]\n }\n}\n", []string{"search"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := FilterToolsList([]byte(tc.doc), keep)
			if err != nil {
				t.Fatal(err)
			}
			if got := toolNames(t, out); !slices.Equal(got, tc.want) {
				t.Fatalf("names = %v, want %v (%s)", got, tc.want, out)
			}
		})
	}
	for _, doc := range []string{
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`,
		`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`,
		`{"result":{"tools":"none"}}`,
		`[1,2]`,
	} {
		out, changed, err := FilterToolsList([]byte(doc), keep)
		if err != nil || changed || string(out) != doc {
			t.Errorf("%s: changed=%v err=%v out=%s", doc, changed, err, out)
		}
	}
	for _, doc := range []string{
		`{"result":{"tools":[{"name":"delete"}]},"result":{"tools":[]}}`,
		`{"result":{"tools":[{"name":"delete"}],"tools":[]}}`,
		`{"result":{"tools":[{"name":"delete"}]}`,
		"{\"result\":{\"tools\":[{\"name\":\"del\xffete\"}]}}",
		`{"result":{"tools":[{"name":"\ud800"}]}}`,
		strings.Repeat("[", 100) + strings.Repeat("]", 100),
	} {
		if _, _, err := FilterToolsList([]byte(doc), keep); !errors.Is(err, ErrUnfilterable) {
			t.Errorf("%.60s: err=%v, want ErrUnfilterable", doc, err)
		}
	}
}

// recorder is a writer that records each Write call and can be flushed.
type recorder struct {
	bytes.Buffer
	writes, flushes int
}

func (r *recorder) Write(p []byte) (int, error) { r.writes++; return r.Buffer.Write(p) }
func (r *recorder) Flush()                      { r.flushes++ }

// sseEvents parses an event stream the way an EventSource does and returns the
// data of each dispatched event.
func sseEvents(stream string) []string {
	stream = strings.TrimPrefix(stream, "\ufeff")
	stream = strings.ReplaceAll(stream, "\r\n", "\n")
	stream = strings.ReplaceAll(stream, "\r", "\n")
	var out []string
	var data []string
	has := false
	lines := strings.Split(stream, "\n")
	for i, l := range lines {
		if i == len(lines)-1 {
			break // an unterminated last line is not processed
		}
		if l == "" {
			if has {
				out = append(out, strings.Join(data, "\n"))
			}
			data, has = nil, false
			continue
		}
		name, value, _ := strings.Cut(l, ":")
		value = strings.TrimPrefix(value, " ")
		if name == "data" {
			data = append(data, value)
			has = true
		}
	}
	return out
}

func TestSSEFilterRewritesTheListingEvent(t *testing.T) {
	progress := "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\r\n\r\n"
	split := strings.Replace(listing, `"tools":[`, "\"tools\":\ndata: [", 1)
	stream := "\ufeff: hello\n\n" + progress + "id: 9\nevent: message\ndata: " + split + "\n\n: keep-alive\n"
	for _, chunk := range []int{1, 2, 3, 7, 64, len(stream)} {
		var rec recorder
		f := NewSSEFilter(&rec, keepOnly("search"), 0)
		for s := stream; s != ""; {
			n := min(chunk, len(s))
			if _, err := f.Write([]byte(s[:n])); err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
			s = s[n:]
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		got := rec.String()
		if !strings.HasPrefix(got, "\ufeff: hello\n\n"+progress+"id: 9\nevent: message\ndata: ") {
			t.Fatalf("chunk %d: events before the listing or its fields changed:\n%q", chunk, got)
		}
		if !strings.HasSuffix(got, "\n\n: keep-alive\n") {
			t.Fatalf("chunk %d: the comment after the listing was not forwarded at once:\n%q", chunk, got)
		}
		events := sseEvents(got)
		if len(events) != 2 {
			t.Fatalf("chunk %d: %d events in %q", chunk, len(events), got)
		}
		if names := toolNames(t, []byte(events[1])); !slices.Equal(names, []string{"search"}) {
			t.Fatalf("chunk %d: listing names %v", chunk, names)
		}
		if rec.flushes == 0 || rec.flushes != rec.writes {
			t.Fatalf("chunk %d: %d writes, %d flushes", chunk, rec.writes, rec.flushes)
		}
	}
}

func TestSSEFilterPassesOtherEventsByteForByte(t *testing.T) {
	stream := "retry: 100\r\r" + "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\r\r" +
		"data:" + listing + "\n\n"
	var rec recorder
	f := NewSSEFilter(&rec, keepOnly("search", "delete", "fetch"), 0)
	for i := 0; i < len(stream); i++ {
		if _, err := f.Write([]byte{stream[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if rec.String() != stream {
		t.Fatalf("stream changed:\n%q\nwant\n%q", rec.String(), stream)
	}
}

// TestSSEFilterForwardsEachEventWhenItEnds checks nothing is held past an event's
// blank line, so a revocation check downstream sees the bytes promptly.
func TestSSEFilterForwardsEachEventWhenItEnds(t *testing.T) {
	var rec recorder
	f := NewSSEFilter(&rec, keepOnly(), 0)
	ev := "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n"
	if _, err := f.Write([]byte(ev)); err != nil {
		t.Fatal(err)
	}
	if rec.Len() != 0 {
		t.Fatalf("an unfinished event was forwarded: %q", rec.String())
	}
	if _, err := f.Write([]byte("\n")); err != nil {
		t.Fatal(err)
	}
	if rec.String() != ev+"\n" {
		t.Fatalf("forwarded %q", rec.String())
	}
	// A lone CR ends a line at once; the LF that follows in the next write belongs
	// to the same line ending and is forwarded as it comes.
	rec.Reset()
	if _, err := f.Write([]byte(":ping\r")); err != nil {
		t.Fatal(err)
	}
	if rec.String() != ":ping\r" {
		t.Fatalf("comment ending in CR: %q", rec.String())
	}
	if _, err := f.Write([]byte("\ndata: {}\r")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if rec.String() != ":ping\r\ndata: {}\r\n\r\n" {
		t.Fatalf("got %q", rec.String())
	}
}

func TestSSEFilterBoundsAnEvent(t *testing.T) {
	var rec recorder
	f := NewSSEFilter(&rec, keepOnly(), 100)
	if _, err := f.Write([]byte("data: " + strings.Repeat("x", 90) + "\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("data: more\n")); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("past the bound: %v", err)
	}
	if _, err := f.Write([]byte("\n")); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("after the bound: %v", err)
	}
	if err := f.Close(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("Close: %v", err)
	}
	if rec.Len() != 0 {
		t.Fatalf("part of the oversized event was forwarded: %q", rec.String())
	}

	// A line with no terminator is bounded too.
	f = NewSSEFilter(&rec, keepOnly(), 100)
	for i := 0; i < 10; i++ {
		_, err := f.Write(bytes.Repeat([]byte("y"), 20))
		if i < 5 && err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if i >= 5 && !errors.Is(err, ErrEventTooLarge) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
}

func TestSSEFilterRefusesAnUnreadableEvent(t *testing.T) {
	var rec recorder
	f := NewSSEFilter(&rec, keepOnly(), 0)
	if _, err := f.Write([]byte("data: {\"result\":{\"tools\":[{\"name\":\"x\"}]\n\n")); !errors.Is(err, ErrUnfilterable) {
		t.Fatalf("truncated listing: %v", err)
	}
	if rec.Len() != 0 {
		t.Fatalf("forwarded %q", rec.String())
	}
}

func TestSSEFilterDropsAnUnterminatedEvent(t *testing.T) {
	var rec recorder
	f := NewSSEFilter(&rec, keepOnly(), 0)
	if _, err := f.Write([]byte("data: " + listing + "\n")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if rec.Len() != 0 {
		t.Fatalf("an event without its blank line was forwarded: %q", rec.String())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestSSEFilterStopsOnAWriteError(t *testing.T) {
	f := NewSSEFilter(failWriter{}, keepOnly(), 0)
	if _, err := f.Write([]byte(": x\n")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("Write: %v", err)
	}
	if _, err := f.Write([]byte(": y\n")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("second Write: %v", err)
	}
}

func TestJSONFilter(t *testing.T) {
	var out bytes.Buffer
	f := NewJSONFilter(&out, keepOnly("fetch"), 0)
	for i := 0; i < len(listing); i += 10 {
		if _, err := f.Write([]byte(listing[i:min(i+10, len(listing))])); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 {
		t.Fatal("the JSON filter wrote before Close")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if names := toolNames(t, out.Bytes()); !slices.Equal(names, []string{"fetch"}) {
		t.Fatalf("names = %v", names)
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("Write after Close succeeded")
	}

	f = NewJSONFilter(&out, keepOnly(), 16)
	if _, err := f.Write([]byte(listing)); !errors.Is(err, ErrResponseTooLarge) {
		t.Fatalf("past the bound: %v", err)
	}
	if err := f.Close(); !errors.Is(err, ErrResponseTooLarge) {
		t.Fatalf("Close past the bound: %v", err)
	}
	f = NewJSONFilter(&out, keepOnly(), 0)
	f.Write([]byte(`{"result":`))
	if err := f.Close(); !errors.Is(err, ErrUnfilterable) {
		t.Fatalf("truncated: %v", err)
	}
}
