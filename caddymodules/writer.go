package caddymodules

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// errStreamRevoked is returned by Write once the response must end: reverse_proxy then
// aborts the response (HTTP/1.1: the connection closes without the terminating chunk;
// HTTP/2: the stream is reset), so the client cannot take it for a complete one.
var errStreamRevoked = errors.New("mandate revoked or expired during the response")

// guard wraps the response writer of one request. It re-checks the mandate at every
// checkBytes boundary of the body, in Write and ReadFrom alike, and can be aborted from
// another goroutine (a revocation watch or the expiry timer), which also cancels the
// request context and closes a hijacked connection. It never buffers, never panics in
// Write or FlushError, and keeps Unwrap for http.ResponseController.
type guard struct {
	*caddyhttp.ResponseWriterWrapper

	every   int64 // check_bytes
	written int64 // body bytes passed on so far
	next    int64 // offset of the next boundary not yet covered by a check
	expires int64 // unix nanoseconds; 0 when expiry does not end the response
	check   func() bool
	arm     func() // starts watching for revocation (streams and upgrades); once
	armed   bool
	header  bool
	aborted atomic.Bool
	cancel  func()
	self    writerOnly

	mu   sync.Mutex
	conn net.Conn // the hijacked connection, if any
}

// writerOnly hides ReadFrom so io.CopyBuffer in ReadFrom goes through Write.
type writerOnly struct{ g *guard }

func (w *writerOnly) Write(p []byte) (int, error) { return w.g.Write(p) }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// abort ends the response: later writes fail, the request context is cancelled (so an
// idle stream's upstream read returns at once) and an upgraded connection is closed.
func (g *guard) abort() {
	if g.aborted.Swap(true) {
		return
	}
	g.cancel()
	g.mu.Lock()
	if g.conn != nil {
		_ = g.conn.Close()
	}
	g.mu.Unlock()
}

// stop reports whether the response must end now, aborting it if so.
func (g *guard) stop() bool {
	if g.aborted.Load() {
		return true
	}
	if g.check() || (g.expires != 0 && time.Now().UnixNano() >= g.expires) {
		g.abort()
		return true
	}
	return false
}

func (g *guard) WriteHeader(status int) {
	if g.header {
		g.ResponseWriter.WriteHeader(status)
		return
	}
	g.header = true
	// A response whose body is not bounded small is a stream: watch for revocation so
	// that it is cut even when it sends nothing.
	if status == http.StatusSwitchingProtocols || !g.boundedBody() {
		g.startWatch()
	}
	g.ResponseWriter.WriteHeader(status)
}

func (g *guard) boundedBody() bool {
	cl := g.Header().Get("Content-Length")
	if cl == "" {
		return false
	}
	n := 0
	for i := 0; i < len(cl); i++ {
		c := cl[i]
		if c < '0' || c > '9' || int64(n) > g.every {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return int64(n) <= g.every
}

func (g *guard) startWatch() {
	if !g.armed {
		g.armed = true
		g.arm()
	}
}

// Write checks the mandate before passing on a write that reaches a check_bytes boundary
// not yet covered (the first byte is offset 0, so the first write is checked too). One
// check covers every boundary the write crosses: they are all crossed by this one write,
// at the same moment. The write itself is passed on whole; cutting it at every boundary
// would turn each 4 KiB into a TLS record and a syscall of its own, for no earlier
// decision. A write still blocked on a slow client when a revocation arrives is followed
// by no other: the watch on streaming responses aborts at once.
func (g *guard) Write(p []byte) (int, error) {
	if !g.header {
		g.WriteHeader(http.StatusOK)
	}
	if g.aborted.Load() {
		return 0, errStreamRevoked
	}
	end := g.written + int64(len(p))
	if end > g.next {
		if g.stop() {
			return 0, errStreamRevoked
		}
		g.next = ((end-1)/g.every + 1) * g.every
	}
	n, err := g.ResponseWriter.Write(p)
	g.written += int64(n)
	return n, err
}

// ReadFrom copies through Write so that the boundary checks apply; the promoted
// ReadFrom of the wrapper would bypass them.
func (g *guard) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	return io.CopyBuffer(&g.self, r, *buf)
}

// FlushError flushes through the controller; a flushed response is a stream.
func (g *guard) FlushError() error {
	if !g.header {
		g.WriteHeader(http.StatusOK)
	}
	g.startWatch()
	if g.aborted.Load() {
		return errStreamRevoked
	}
	return http.NewResponseController(g.ResponseWriter).Flush()
}

// Hijack hands out the connection and remembers it, so a revocation closes it.
func (g *guard) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if g.stop() {
		return nil, nil, errStreamRevoked
	}
	conn, brw, err := http.NewResponseController(g.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	g.mu.Lock()
	g.conn = conn
	g.mu.Unlock()
	g.header = true
	g.startWatch()
	if g.aborted.Load() {
		_ = conn.Close()
	}
	return conn, brw, nil
}

// Interface guards.
var (
	_ http.ResponseWriter = (*guard)(nil)
	_ io.ReaderFrom       = (*guard)(nil)
	_ http.Hijacker       = (*guard)(nil)
)
