package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
)

const testEvery = 512

// payload is n bytes that differ from one position to the next, so a reordered or
// duplicated piece would not go unnoticed.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i % 251)
	}
	return p
}

// wantChecksAt lists where checks belong for the writes the inner writer received
// (the guard passes writes on whole): at the start of every write that holds the byte
// at a check_bytes boundary (offset 0 included), and nowhere else.
func wantChecksAt(writes []int, every int) []int {
	var at []int
	off := 0
	for _, n := range writes {
		if n > 0 && (off%every == 0 || off/every != (off+n-1)/every) {
			at = append(at, off)
		}
		off += n
	}
	return at
}

// assertWhole checks what reached rec: the whole body, unaltered.
func assertWhole(t *testing.T, rec *recorder, body []byte) {
	t.Helper()
	if !bytes.Equal(rec.body, body) {
		t.Fatalf("the body arrived altered: %d bytes of %d", len(rec.body), len(body))
	}
}

// writePatterns split a body into the writes a handler might make.
var writePatterns = []struct {
	name  string
	total int
	sizes func(total int) []int
}{
	{"one write spanning many boundaries", 5*testEvery + 100, func(n int) []int { return []int{n} }},
	{"one-byte writes", 3*testEvery + 1, func(n int) []int { return repeat(1, n) }},
	{"writes of an odd size", 3000, func(n int) []int { return repeat(333, n) }},
	{"writes of exactly the interval", 4 * testEvery, func(n int) []int { return repeat(testEvery, n) }},
	{"writes one byte over the interval", 3 * (testEvery + 1), func(n int) []int { return repeat(testEvery+1, n) }},
	{"empty writes in between", 2*testEvery + 7, func(n int) []int { return []int{0, testEvery - 1, 0, 1, 0, n - testEvery} }},
}

// repeat splits total into pieces of size (the last one shorter).
func repeat(size, total int) []int {
	var out []int
	for total > 0 {
		n := min(size, total)
		out = append(out, n)
		total -= n
	}
	return out
}

func TestGuardWriteChecksAtEveryBoundary(t *testing.T) {
	for _, pat := range writePatterns {
		t.Run(pat.name, func(t *testing.T) {
			rec := newRecorder(true)
			p := newProbe(rec, testEvery, never)
			body := payload(pat.total)
			rest := body
			for _, n := range pat.sizes(pat.total) {
				m, err := p.g.Write(rest[:n])
				if err != nil || m != n {
					t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
				}
				rest = rest[n:]
			}
			checksAt, _, _ := p.state()
			var nonEmpty []int
			for _, n := range pat.sizes(pat.total) {
				if n > 0 {
					nonEmpty = append(nonEmpty, n)
				}
			}
			var received []int
			for _, n := range rec.writes {
				if n > 0 {
					received = append(received, n)
				}
			}
			if !slices.Equal(received, nonEmpty) {
				t.Fatalf("the inner writer got writes of %v, want them passed on whole: %v", received, nonEmpty)
			}
			if want := wantChecksAt(received, testEvery); !slices.Equal(checksAt, want) {
				t.Fatalf("checked at %v, want %v", checksAt, want)
			}
			assertWhole(t, rec, body)
		})
	}
}

// onlyReader hides every method of the reader but Read (bytes.Reader's WriteTo, for
// one), so that io.Copy has to call ReadFrom.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// boundariesUpTo lists the check points of a body of total bytes passed on through
// ReadFrom in pieces that end at boundaries: every boundary before the end, and the end
// itself when it is one (the guard checks there before it finds the source exhausted).
func boundariesUpTo(total, every int) []int {
	var at []int
	for off := 0; off <= total; off += every {
		if off < total || total%every == 0 {
			at = append(at, off)
		}
	}
	return at
}

func TestGuardReadFromChecksAtEveryBoundary(t *testing.T) {
	readers := map[string]func([]byte) io.Reader{
		"a plain reader":            func(b []byte) io.Reader { return onlyReader{bytes.NewReader(b)} },
		"a reader of one byte":      func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
		"a reader of half requests": func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"a reader with WriteTo":     func(b []byte) io.Reader { return bytes.NewReader(b) },
	}
	for name, reader := range readers {
		for _, total := range []int{1, testEvery, 7*testEvery + 3, 100 << 10} {
			t.Run(fmt.Sprintf("%s of %d bytes", name, total), func(t *testing.T) {
				rec := newRecorder(true)
				p := newProbe(rec, testEvery, never)
				body := payload(total)
				n, err := io.Copy(p.g, reader(body))
				if err != nil || n != int64(total) {
					t.Fatalf("io.Copy = %d, %v", n, err)
				}
				checksAt, _, _ := p.state()
				want := wantChecksAt(rec.writes, testEvery)
				if name != "a reader with WriteTo" {
					// io.Copy called ReadFrom: the inner writer's, one piece per interval.
					if want = boundariesUpTo(total, testEvery); rec.readFrom != (total+testEvery-1)/testEvery {
						t.Fatalf("the inner ReadFrom got %d pieces (%v), want one per interval", rec.readFrom, rec.writes)
					}
					for i, w := range rec.writes[:len(rec.writes)-1] {
						if w != testEvery {
							t.Fatalf("piece %d is %d bytes: pieces must end at boundaries", i, w)
						}
					}
				}
				if len(want) == 0 || !slices.Equal(checksAt, want) {
					t.Fatalf("checked at %v, want %v", checksAt, want)
				}
				assertWhole(t, rec, body)
			})
		}
	}
}

// TestGuardReadFromAFileStillChecks uses the reader for which net/http's own ReadFrom
// switches to sendfile: the guard keeps it, in pieces that end at boundaries, checking
// at each.
func TestGuardReadFromAFileStillChecks(t *testing.T) {
	total := 10*testEvery + 1
	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, payload(total), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := newRecorder(true)
	p := newProbe(rec, testEvery, never)
	if n, err := p.g.ReadFrom(f); err != nil || n != int64(total) {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	checksAt, _, _ := p.state()
	if want := boundariesUpTo(total, testEvery); rec.readFrom != 11 || !slices.Equal(checksAt, want) {
		t.Fatalf("checked at %v (inner ReadFrom calls %d), want %v over 11 calls", checksAt, rec.readFrom, want)
	}
	assertWhole(t, rec, payload(total))
}

// TestGuardReadFromRevokedMidwayStopsAtTheBoundary: a revocation that arrives while the
// inner ReadFrom sends a piece is found at the boundary the piece ends at, and nothing
// past it is sent.
func TestGuardReadFromRevokedMidwayStopsAtTheBoundary(t *testing.T) {
	var revoked atomic.Bool
	rec := newRecorder(true)
	p := newProbe(rec, testEvery, revoked.Load)
	src := &revokingReader{r: onlyReader{bytes.NewReader(payload(10 * testEvery))}, after: 3*testEvery + 100, revoke: func() { revoked.Store(true) }}
	n, err := p.g.ReadFrom(src)
	if !errors.Is(err, ErrResponseRevoked) || n != 4*testEvery || rec.n != 4*testEvery {
		t.Fatalf("ReadFrom = %d, %v with %d bytes sent; want the body cut at %d", n, err, rec.n, 4*testEvery)
	}
	checksAt, _, cancelled := p.state()
	if !slices.Equal(checksAt, boundariesUpTo(4*testEvery, testEvery)) || !cancelled {
		t.Fatalf("checked at %v, request context cancelled %v", checksAt, cancelled)
	}
}

// revokingReader calls revoke once after bytes have been read from it.
type revokingReader struct {
	r      io.Reader
	after  int
	read   int
	revoke func()
}

func (r *revokingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.read < r.after && r.read+n >= r.after {
		r.revoke()
	}
	r.read += n
	return n, err
}

func TestGuardRevocationBetweenBoundariesStopsBeforeTheNext(t *testing.T) {
	for _, via := range []string{"Write", "ReadFrom"} {
		t.Run("through "+via, func(t *testing.T) {
			var revoked atomic.Bool
			rec := newRecorder(true)
			p := newProbe(rec, testEvery, revoked.Load)
			write := func(b []byte) (int, error) {
				if via == "Write" {
					return p.g.Write(b)
				}
				n, err := p.g.ReadFrom(onlyReader{bytes.NewReader(b)})
				return int(n), err
			}
			if n, err := write(payload(testEvery + 188)); err != nil || n != testEvery+188 {
				t.Fatalf("write before the revocation = %d, %v", n, err)
			}
			// A write that stays short of the next boundary (at 2*testEvery) needs no check.
			if n, err := write(payload(testEvery - 200)); err != nil || n != testEvery-200 {
				t.Fatalf("write short of the boundary = %d, %v", n, err)
			}
			revoked.Store(true)
			// The next write would cross the boundary. Write checks it first and refuses
			// it whole; ReadFrom passes on the 12 bytes short of the boundary (covered by
			// the check at the previous one) and stops at the boundary.
			wantN, wantSent, wantChecks := 0, 2*testEvery-12, []int{0, 2*testEvery - 12}
			if via == "ReadFrom" {
				wantN, wantSent, wantChecks = 12, 2*testEvery, []int{0, testEvery, 2 * testEvery}
			}
			n, err := write(payload(400))
			if !errors.Is(err, ErrResponseRevoked) || n != wantN {
				t.Fatalf("write across the boundary = %d, %v; want %d, ErrResponseRevoked", n, err, wantN)
			}
			if rec.n != wantSent {
				t.Fatalf("%d bytes reached the client, want exactly %d", rec.n, wantSent)
			}
			checksAt, _, cancelled := p.state()
			if !slices.Equal(checksAt, wantChecks) || !cancelled {
				t.Fatalf("checked at %v, request context cancelled %v", checksAt, cancelled)
			}
			// From now on nothing gets through, and nothing is checked again.
			if n, err := write(payload(10)); n != 0 || !errors.Is(err, ErrResponseRevoked) {
				t.Fatalf("write after the abort = %d, %v", n, err)
			}
			if checksAfter, _, _ := p.state(); len(checksAfter) != len(wantChecks) || rec.n != wantSent {
				t.Fatalf("after the abort: %d checks, %d bytes", len(checksAfter), rec.n)
			}
		})
	}
}

func TestGuardAbortedFromAnotherGoroutineRefusesEverything(t *testing.T) {
	rec := newRecorder(true)
	p := newProbe(rec, testEvery, never)
	if _, err := p.g.Write(payload(10)); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.g.abort()
		p.g.abort() // twice is harmless
	}()
	<-done
	// Between boundaries: the abort is still seen at once.
	if n, err := p.g.Write(payload(10)); n != 0 || !errors.Is(err, ErrResponseRevoked) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if err := p.g.FlushError(); !errors.Is(err, ErrResponseRevoked) {
		t.Fatalf("FlushError = %v", err)
	}
	if _, _, err := p.g.Hijack(); !errors.Is(err, ErrResponseRevoked) {
		t.Fatalf("Hijack = %v", err)
	}
	if _, _, cancelled := p.state(); !cancelled || rec.n != 10 || rec.flushes != 0 {
		t.Fatalf("cancelled %v, %d bytes, %d flushes", cancelled, rec.n, rec.flushes)
	}
}

func TestGuardFlushGoesThroughAndArmsTheWatch(t *testing.T) {
	rec := newRecorder(false)
	p := newProbe(rec, testEvery, never)
	if err := http.NewResponseController(p.g).Flush(); err != nil {
		t.Fatal(err)
	}
	if err := p.g.FlushError(); err != nil {
		t.Fatal(err)
	}
	if _, arms, _ := p.state(); arms != 1 || rec.flushes != 2 || rec.status != http.StatusOK {
		t.Fatalf("arms %d, flushes %d, status %d; want 1, 2, 200", arms, rec.flushes, rec.status)
	}
}

func TestGuardWatchesStreamsOnly(t *testing.T) {
	cases := []struct {
		name          string
		status        int
		contentLength string
		watch         bool
	}{
		{"a small body", http.StatusOK, "100", false},
		{"a body of exactly the interval", http.StatusOK, fmt.Sprint(testEvery), false},
		{"a body one byte over the interval", http.StatusOK, fmt.Sprint(testEvery + 1), true},
		{"a body of unknown length", http.StatusOK, "", true},
		{"an unreadable length", http.StatusOK, "12a", true},
		{"a huge length", http.StatusOK, "99999999999999999999999999", true},
		{"a protocol switch", http.StatusSwitchingProtocols, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder(false)
			p := newProbe(rec, testEvery, never)
			if c.contentLength != "" {
				p.g.Header().Set("Content-Length", c.contentLength)
			}
			p.g.WriteHeader(c.status)
			p.g.WriteHeader(http.StatusTeapot) // a second call changes nothing here
			if _, arms, _ := p.state(); (arms == 1) != c.watch || arms > 1 || rec.status != c.status {
				t.Fatalf("arms %d, status %d", arms, rec.status)
			}
		})
	}
}

func TestGuardHijackHandsOverAndClosesOnAbort(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	rec := newRecorder(false)
	rec.conn = server
	p := newProbe(rec, testEvery, never)
	p.g.WriteHeader(http.StatusSwitchingProtocols)
	conn, _, err := http.NewResponseController(p.g).Hijack()
	if err != nil || conn != server {
		t.Fatalf("Hijack = %v, %v", conn, err)
	}
	if _, arms, _ := p.state(); arms != 1 {
		t.Fatalf("arms %d, want 1", arms)
	}
	go p.g.abort()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("the client side read %v, want io.EOF from the closed connection", err)
	}
	if _, _, cancelled := p.state(); !cancelled {
		t.Fatal("the request context was not cancelled")
	}
}

func TestGuardHijackOfARevokedMandateFails(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	rec := newRecorder(false)
	rec.conn = server
	p := newProbe(rec, testEvery, func() bool { return true })
	if conn, _, err := p.g.Hijack(); conn != nil || !errors.Is(err, ErrResponseRevoked) {
		t.Fatalf("Hijack = %v, %v", conn, err)
	}
}

func TestGuardUnwrapReachesTheInnerWriter(t *testing.T) {
	rec := newRecorder(false)
	p := newProbe(rec, testEvery, never)
	if p.g.Unwrap() != http.ResponseWriter(rec) {
		t.Fatal("Unwrap does not return the inner writer")
	}
	// The guard has no SetWriteDeadline: the controller must find the inner one.
	deadline := time.Now().Add(time.Minute)
	if err := http.NewResponseController(p.g).SetWriteDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	if !rec.deadline.Equal(deadline) {
		t.Fatal("the write deadline did not reach the inner writer")
	}
}

// revocationCheck is the check Wrap installs: the verifier's revocation lookup of every
// anchor of the mandate, on a set holding many other revocations.
func revocationCheck(tb testing.TB) func() bool {
	tb.Helper()
	f := newFixture(tb)
	for i := range 10_000 {
		f.revokeSession(testZone, fmt.Sprintf("other-%d", i))
	}
	v := f.verifier(tb, nil)
	c := f.delegatedClaims()
	if v.Revoked(c) {
		tb.Fatal("the mandate is revoked before the test")
	}
	return func() bool { return v.Revoked(c) }
}

func TestGuardWriteDoesNotAllocate(t *testing.T) {
	check := revocationCheck(t)
	chunk := payload(testEvery)
	t.Run("between boundaries", func(t *testing.T) {
		rec := newRecorder(false)
		p := newProbe(rec, 1<<20, check)
		p.g.check = check
		one := chunk[:1]
		if allocs := testing.AllocsPerRun(1000, func() { _, _ = p.g.Write(one) }); allocs != 0 {
			t.Fatalf("%.1f allocations per write", allocs)
		}
	})
	t.Run("at a boundary", func(t *testing.T) {
		rec := newRecorder(false)
		p := newProbe(rec, testEvery, check)
		p.g.check = check
		p.g.expires = time.Now().Add(time.Hour).UnixNano()
		before := rec.n
		allocs := testing.AllocsPerRun(1000, func() { _, _ = p.g.Write(chunk) })
		if allocs != 0 {
			t.Fatalf("%.1f allocations per write", allocs)
		}
		if rec.n-before != 1001*testEvery {
			t.Fatalf("%d bytes written, want every write to go through", rec.n-before)
		}
	})
}

func TestGuardEndsAtExpiry(t *testing.T) {
	rec := newRecorder(false)
	p := newProbe(rec, testEvery, never)
	p.g.expires = time.Now().Add(-time.Nanosecond).UnixNano()
	if n, err := p.g.Write(payload(10)); n != 0 || !errors.Is(err, ErrResponseRevoked) {
		t.Fatalf("Write after expiry = %d, %v", n, err)
	}
	if _, _, cancelled := p.state(); !cancelled {
		t.Fatal("the request context was not cancelled")
	}
}

// recorder is the writer under a guard. It records what reaches it and offers every
// optional interface the guard must route through itself (ReadFrom, flushing,
// hijacking) plus one it must leave to http.ResponseController (write deadlines), so a
// test sees whether the guard bypassed its checks. With keep false it records only
// counts, so writing to it does not allocate.
type recorder struct {
	header http.Header
	status int
	keep   bool

	n        int   // body bytes received
	writes   []int // sizes of the writes received, when keep is set
	body     []byte
	readFrom int // calls of ReadFrom that passed on bytes (recorded in writes too)
	flushes  int
	deadline time.Time
	conn     net.Conn // what Hijack hands out
}

func newRecorder(keep bool) *recorder {
	return &recorder{header: make(http.Header), keep: keep}
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.n += len(p)
	if r.keep {
		r.writes = append(r.writes, len(p))
		r.body = append(r.body, p...)
	}
	return len(p), nil
}

// ReadFrom reads src to its end as one piece, as sendfile would.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var b bytes.Buffer
	n, err := b.ReadFrom(src)
	if n > 0 {
		r.readFrom++
		r.n += int(n)
		if r.keep {
			r.writes = append(r.writes, int(n))
			r.body = append(r.body, b.Bytes()...)
		}
	}
	return n, err
}

func (r *recorder) FlushError() error {
	r.flushes++
	return nil
}

func (r *recorder) SetWriteDeadline(t time.Time) error {
	r.deadline = t
	return nil
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return r.conn, bufio.NewReadWriter(bufio.NewReader(r.conn), bufio.NewWriter(r.conn)), nil
}

// probe is a guarded writer built the way Wrap builds one, with its hooks counted.
type probe struct {
	g *GuardedWriter

	mu        sync.Mutex
	checksAt  []int // recorder byte counts at which the mandate was checked
	arms      int
	cancelled bool
}

// newProbe guards rec, checking every bytes; revoked answers the checks.
func newProbe(rec *recorder, every int, revoked func() bool) *probe {
	p := new(probe)
	p.g = &GuardedWriter{
		w:     rec,
		guard: &Guard{every: int64(every), expiry: true, clock: SystemClock},
		every: int64(every),
		check: func() bool {
			p.mu.Lock()
			p.checksAt = append(p.checksAt, rec.n)
			p.mu.Unlock()
			return revoked()
		},
		arm: func() {
			p.mu.Lock()
			p.arms++
			p.mu.Unlock()
		},
		cancel: func() {
			p.mu.Lock()
			p.cancelled = true
			p.mu.Unlock()
		},
	}
	p.g.self.g = p.g
	return p
}

func (p *probe) state() (checksAt []int, arms int, cancelled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.checksAt...), p.arms, p.cancelled
}

func never() bool { return false }

// guarded serves h behind v.Middleware and g.Middleware on a loopback HTTP/1.1 server.
func guarded(t *testing.T, v *Verifier, g *Guard, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(v.Middleware(g.Middleware(h)))
	t.Cleanup(srv.Close)
	return srv
}

// open sends a GET with tok and returns the response once its headers are in.
func open(t *testing.T, srv *httptest.Server, tok string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// idleStream sends the headers of an event stream, then nothing until the request ends,
// and reports the request context's error on ended.
func idleStream(ended chan<- error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		if err := http.NewResponseController(w).Flush(); err != nil {
			ended <- err
			return
		}
		<-r.Context().Done()
		ended <- r.Context().Err()
	}
}

func newTestGuard(t *testing.T, v *Verifier, opts GuardOptions) *Guard {
	t.Helper()
	g, err := NewGuard(v, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// armWatch moves the fake clock past the stream watch's delay once the stream has
// started it, so that the watch is registered.
func armWatch(t *testing.T, f *fixture) {
	t.Helper()
	testenv.WaitFor(t, "the stream watch to start", func() bool { return f.clock.Timers() > 0 })
	f.clock.Advance(streamWatchDelay)
}

func TestGuardMiddlewareCutsAnIdleStreamOnRevocation(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	g := newTestGuard(t, v, GuardOptions{Clock: f.clock})
	ended := make(chan error, 1)
	srv := guarded(t, v, g, idleStream(ended))
	resp := open(t, srv, f.token(t, nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	armWatch(t, f)
	f.revokeSession(testZone, "sid-1")
	_, err := testenv.BodyEnd(t, resp.Body)
	testenv.AssertAborted(t, err, false)
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the handler's request ended with %v, want context.Canceled", err)
	}
}

func TestGuardMiddlewareEndsAnIdleStreamAtExpiry(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	g := newTestGuard(t, v, GuardOptions{Clock: f.clock})
	ended := make(chan error, 1)
	srv := guarded(t, v, g, idleStream(ended))
	resp := open(t, srv, f.token(t, nil))
	armWatch(t, f)
	// Still valid within the leeway: the stream goes on.
	f.clock.Advance(300*time.Second + v.Leeway() - streamWatchDelay - time.Second)
	select {
	case err := <-ended:
		t.Fatalf("the stream ended before its mandate expired: %v", err)
	default:
	}
	f.clock.Advance(time.Second)
	_, err := testenv.BodyEnd(t, resp.Body)
	testenv.AssertAborted(t, err, false)
	<-ended
}

func TestGuardMiddlewareKeepOnExpiryLetsTheResponseOutliveTheMandate(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	g := newTestGuard(t, v, GuardOptions{Clock: f.clock, KeepOnExpiry: true})
	srv := guarded(t, v, g, func(w http.ResponseWriter, r *http.Request) {
		// The mandate expires before the first write: without KeepOnExpiry the first
		// boundary check would end the response.
		f.clock.Advance(time.Hour)
		_, _ = io.WriteString(w, "late")
	})
	resp := open(t, srv, f.token(t, nil))
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "late" {
		t.Fatalf("body %q, %v", body, err)
	}
}

func TestGuardMiddlewareRefusesAResponseRevokedBeforeItsHeaders(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	g := newTestGuard(t, v, GuardOptions{Clock: f.clock})
	srv := guarded(t, v, g, func(w http.ResponseWriter, r *http.Request) {
		// An upgrade asked for after the revocation: nothing has been sent yet.
		f.revokeSession(testZone, "sid-1")
		if _, _, err := http.NewResponseController(w).Hijack(); !errors.Is(err, ErrResponseRevoked) {
			t.Errorf("Hijack = %v, want ErrResponseRevoked", err)
		}
	})
	resp := open(t, srv, f.token(t, nil))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized ||
		parseChallenge(t, resp.Header.Get("WWW-Authenticate"))["error_description"] != "the mandate has been revoked" {
		t.Fatalf("status %d, challenge %q, body %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
}

func TestGuardMiddlewareWithoutAVerifiedMandateServesNothing(t *testing.T) {
	f := newFixture(t)
	g := newTestGuard(t, f.verifier(t, nil), GuardOptions{})
	rec := httptest.NewRecorder()
	g.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the handler ran without a verified mandate")
	})).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d, want 500", rec.Code)
	}
}

func TestNewGuardRefusesBadOptions(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, nil)
	for _, n := range []int{511, 1<<20 + 1, -1} {
		if _, err := NewGuard(v, GuardOptions{CheckBytes: n}); err == nil {
			t.Errorf("check_bytes %d accepted", n)
		}
	}
	if _, err := NewGuard(nil, GuardOptions{}); err == nil {
		t.Error("a guard without a verifier was built")
	}
}
