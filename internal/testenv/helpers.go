package testenv

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// waitBound turns a hang into a failure in WaitFor and BodyEnd; it is never what a test
// asserts.
const waitBound = 45 * time.Second

// WaitFor polls cond until it holds. It waits for state, never for a duration: the bound
// only keeps a broken build from hanging the suite.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitBound)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ReadUntil reads n bytes of body.
func ReadUntil(tb testing.TB, body io.Reader, n int) {
	tb.Helper()
	if _, err := io.ReadFull(body, make([]byte, n)); err != nil {
		tb.Fatalf("reading the first %d bytes: %v", n, err)
	}
}

// BodyEnd reads body to its end in the background, so that a body that never ends fails
// the test instead of hanging it, and returns the bytes read and the error.
func BodyEnd(tb testing.TB, body io.Reader) (int64, error) {
	tb.Helper()
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := io.Copy(io.Discard, body)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-time.After(waitBound):
		tb.Fatal("the response did not end")
		return 0, nil
	}
}

// AssertAborted checks that a client could not take a response for a complete one: over
// HTTP/1.1 the body ends early (no terminating chunk, or short of its Content-Length),
// over HTTP/2 the stream is reset.
func AssertAborted(tb testing.TB, err error, h2 bool) {
	tb.Helper()
	switch {
	case err == nil:
		tb.Fatal("the response ended cleanly")
	case h2 && !strings.Contains(err.Error(), "stream error") && !strings.Contains(err.Error(), "INTERNAL_ERROR"):
		tb.Fatalf("the HTTP/2 body ended with %v, want a stream reset", err)
	case !h2 && !errors.Is(err, io.ErrUnexpectedEOF):
		tb.Fatalf("the HTTP/1.1 body ended with %v, want io.ErrUnexpectedEOF", err)
	}
}

// Proxy is a loopback TCP relay a test can cut (every relayed connection closed, new
// ones accepted and closed at once) and restore, to take a server out of one client's
// reach while the rest of the test still talks to it.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

// NewProxy relays to target until the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	go p.serve()
	tb.Cleanup(func() {
		_ = ln.Close()
		p.Cut(true)
	})
	return p
}

// Addr is the address clients dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.relay(client)
	}
}

func (p *Proxy) relay(client net.Conn) {
	p.mu.Lock()
	refused := p.cut
	p.mu.Unlock()
	if refused {
		_ = client.Close()
		return
	}
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = client.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go pipe(client, server)
	go pipe(server, client)
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// Cut closes every relayed connection and refuses new ones (true), or accepts them again.
func (p *Proxy) Cut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// EmptyDatabase deletes every row of a Caracal database (the schema stays), so tests
// sharing their package's database each start from nothing.
func EmptyDatabase(tb testing.TB, dsn string) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connecting to PostgreSQL (run `make services`): %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "TRUNCATE zones, admin_tokens, audit_events CASCADE"); err != nil {
		tb.Fatalf("emptying the test database: %v", err)
	}
}
