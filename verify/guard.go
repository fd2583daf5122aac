package verify

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caracalgw/caracal/mandate"
)

// DefaultCheckBytes is how often, in response body bytes, a guarded response re-checks
// revocation.
const DefaultCheckBytes = 4096

// ErrResponseRevoked is what a guarded response's Write returns once the response must
// end. net/http (and Caddy's reverse_proxy) then abort the response: over HTTP/1.1 the
// connection closes without the terminating chunk, over HTTP/2 the stream is reset, so
// the client cannot take it for a complete one.
var ErrResponseRevoked = errors.New("mandate revoked or expired during the response")

// Clock is the time source of a Guard: the current time, for expiry, and one-shot
// timers, for the stream watch.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// AfterFunc calls f once d has elapsed; stop cancels the call and reports whether
	// it was still pending.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// SystemClock is the machine's clock.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// GuardOptions configures a Guard.
type GuardOptions struct {
	// CheckBytes is the re-check interval in response body bytes, 512 to 1 MiB
	// (DefaultCheckBytes when 0).
	CheckBytes int
	// KeepOnExpiry lets a response outlive its mandate. By default a response still
	// running when its mandate would stop verifying (exp plus the verifier's leeway)
	// ends then.
	KeepOnExpiry bool
	// Clock decides expiry and runs the stream watch's timers (SystemClock when nil).
	Clock Clock
}

// Guard ends responses whose mandate is revoked, or expires, while they are written:
// it re-checks revocation every CheckBytes of the body, and watches streams (a response
// without a small Content-Length, a flushed one, an upgrade) so that they are cut even
// when they send nothing. It is safe for concurrent use.
type Guard struct {
	v      *Verifier
	every  int64
	expiry bool
	clock  Clock
}

// NewGuard returns the response guard of v's mandates.
func NewGuard(v *Verifier, opts GuardOptions) (*Guard, error) {
	if v == nil {
		return nil, errors.New("verify: a response guard needs a verifier")
	}
	if opts.CheckBytes == 0 {
		opts.CheckBytes = DefaultCheckBytes
	}
	if opts.CheckBytes < 512 || opts.CheckBytes > 1<<20 {
		return nil, fmt.Errorf("verify: check_bytes %d is outside 512..1048576", opts.CheckBytes)
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock
	}
	return &Guard{v: v, every: int64(opts.CheckBytes), expiry: !opts.KeepOnExpiry, clock: opts.Clock}, nil
}

// Middleware guards the responses of next. It must run inside Verifier.Middleware, whose
// verified claims it reads from the request context; a request without them is answered
// 500, never served unguarded. A response cut after its headers were sent is aborted
// with http.ErrAbortHandler, so that the client sees a broken response, not a short
// complete one; one cut before gets the RFC 6750 refusal of a revoked mandate.
func (g *Guard) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := ClaimsFromContext(r.Context())
		if !ok {
			http.Error(w, "response guard without a verified mandate", http.StatusInternalServerError)
			return
		}
		gw, gr := g.Wrap(w, r, c)
		defer gw.Close()
		next.ServeHTTP(gw, gr)
		if gw.Aborted() {
			if gw.Started() {
				panic(http.ErrAbortHandler)
			}
			WriteError(w, g.v.Realm(), invalidToken("the mandate has been revoked"))
		}
	})
}

// Wrap guards one response to a request admitted with c: the handler writes to the
// returned writer and serves the returned request, whose context is cancelled when the
// response is cut. The caller must call Close once the handler has returned, and then
// decide with Aborted and Started how the response ends.
func (g *Guard) Wrap(w http.ResponseWriter, r *http.Request, c *mandate.Claims) (*GuardedWriter, *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	gw := &GuardedWriter{
		w:      w,
		guard:  g,
		claims: c,
		ctx:    ctx,
		every:  g.every,
		check:  func() bool { return g.v.Revoked(c) },
		cancel: cancel,
	}
	gw.self.g = gw
	gw.arm = gw.watch.start
	if g.expiry {
		// The verifier accepts the mandate until exp plus the leeway; ending the response
		// earlier would cut, at its first byte, a response the request was admitted for.
		gw.expires = time.Unix(c.Expiry, 0).Add(g.v.Leeway()).UnixNano()
	}
	gw.watch.gw = gw
	return gw, r.WithContext(ctx)
}

// GuardedWriter is the response writer of one guarded response. It re-checks the mandate
// at every CheckBytes boundary of the body, in Write and ReadFrom alike (ReadFrom keeps
// the inner writer's, in pieces that end at boundaries), and can be
// aborted from another goroutine (the stream watch or the expiry timer), which also
// cancels the request context and closes a hijacked connection. It never buffers, never
// panics in Write or FlushError, and has Unwrap for http.ResponseController.
type GuardedWriter struct {
	w      http.ResponseWriter
	guard  *Guard
	claims *mandate.Claims
	ctx    context.Context

	every   int64 // CheckBytes
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
	watch   streamWatch

	mu   sync.Mutex
	conn net.Conn // the hijacked connection, if any
}

// writerOnly hides ReadFrom so io.CopyBuffer in ReadFrom's fallback goes through Write.
type writerOnly struct{ g *GuardedWriter }

func (w *writerOnly) Write(p []byte) (int, error) { return w.g.Write(p) }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Aborted reports whether the response was cut.
func (g *GuardedWriter) Aborted() bool { return g.aborted.Load() }

// Started reports whether the response's headers have been sent (or its connection
// hijacked): past that point a cut response can only be broken off.
func (g *GuardedWriter) Started() bool { return g.header }

// Close ends the stream watch and cancels the request context; the response is over.
func (g *GuardedWriter) Close() {
	g.watch.stop()
	g.cancel()
}

// abort ends the response: later writes fail, the request context is cancelled (so an
// idle stream's upstream read returns at once) and an upgraded connection is closed.
func (g *GuardedWriter) abort() {
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
func (g *GuardedWriter) stop() bool {
	if g.aborted.Load() {
		return true
	}
	if g.check() || (g.expires != 0 && g.guard.clock.Now().UnixNano() >= g.expires) {
		g.abort()
		return true
	}
	return false
}

// Header returns the inner writer's header map.
func (g *GuardedWriter) Header() http.Header { return g.w.Header() }

// Unwrap returns the inner writer, for http.ResponseController.
func (g *GuardedWriter) Unwrap() http.ResponseWriter { return g.w }

// WriteHeader sends the headers, starting the stream watch first when the response is a
// stream.
func (g *GuardedWriter) WriteHeader(status int) {
	if g.header {
		g.w.WriteHeader(status)
		return
	}
	g.header = true
	// A response whose body is not bounded small is a stream: watch for revocation so
	// that it is cut even when it sends nothing.
	if status == http.StatusSwitchingProtocols || !g.boundedBody() {
		g.startWatch()
	}
	g.w.WriteHeader(status)
}

func (g *GuardedWriter) boundedBody() bool {
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

func (g *GuardedWriter) startWatch() {
	if !g.armed {
		g.armed = true
		g.arm()
	}
}

// Write checks the mandate before passing on a write that reaches a CheckBytes boundary
// not yet covered (the first byte is offset 0, so the first write is checked too). One
// check covers every boundary the write crosses: they are all crossed by this one write,
// at the same moment. The write itself is passed on whole; cutting it at every boundary
// would turn each 4 KiB into a TLS record and a syscall of its own, for no earlier
// decision. A write still blocked on a slow client when a revocation arrives is followed
// by no other: the watch on streaming responses aborts at once.
func (g *GuardedWriter) Write(p []byte) (int, error) {
	if !g.header {
		g.WriteHeader(http.StatusOK)
	}
	if g.aborted.Load() {
		return 0, ErrResponseRevoked
	}
	end := g.written + int64(len(p))
	if end > g.next {
		if g.stop() {
			return 0, ErrResponseRevoked
		}
		g.next = ((end-1)/g.every + 1) * g.every
	}
	n, err := g.w.Write(p)
	g.written += int64(n)
	return n, err
}

// ReadFrom keeps the inner writer's ReadFrom (sendfile or splice, where the response and
// the source allow) without skipping a check: it hands it the body in pieces that end at
// the next CheckBytes boundary (io.LimitReader), and re-checks the mandate at each
// boundary before the piece that starts there. A piece is passed on only up to a
// boundary, so a revocation found at one stops the body there. Without an inner
// ReadFrom the copy goes through Write.
func (g *GuardedWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := g.w.(io.ReaderFrom)
	if !ok {
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		return io.CopyBuffer(&g.self, r, *buf)
	}
	if !g.header {
		g.WriteHeader(http.StatusOK)
	}
	limited := &io.LimitedReader{R: r}
	var total int64
	for {
		if g.aborted.Load() {
			return total, ErrResponseRevoked
		}
		if g.written >= g.next {
			if g.stop() {
				return total, ErrResponseRevoked
			}
			g.next = (g.written/g.every + 1) * g.every
		}
		limited.N = g.next - g.written
		n, err := rf.ReadFrom(limited)
		g.written += n
		total += n
		if err != nil || n == 0 {
			// n == 0 with room left: the source is exhausted.
			return total, err
		}
	}
}

// FlushError flushes through the controller; a flushed response is a stream.
func (g *GuardedWriter) FlushError() error {
	if !g.header {
		g.WriteHeader(http.StatusOK)
	}
	g.startWatch()
	if g.aborted.Load() {
		return ErrResponseRevoked
	}
	return http.NewResponseController(g.w).Flush()
}

// Hijack hands out the connection and remembers it, so a revocation closes it.
func (g *GuardedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if g.stop() {
		return nil, nil, ErrResponseRevoked
	}
	conn, brw, err := http.NewResponseController(g.w).Hijack()
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

// streamWatchDelay is how long a response that turned out to be a stream (no small
// Content-Length, a flush, an upgrade) may run before it is watched. Most such
// responses of an API are over sooner, and watching costs a registration in the
// revocation set, a goroutine and a timer; a stream that lasts is watched from then on,
// and a revocation that arrived in the meantime is found when the watch starts.
const streamWatchDelay = 20 * time.Millisecond

// streamWatch aborts a streaming response as soon as its mandate is revoked or expires,
// even when the response sends nothing. start may run on another goroutine than the
// handler's (reverse_proxy flushes from a timer), hence the lock.
type streamWatch struct {
	gw *GuardedWriter

	mu         sync.Mutex
	stopped    bool
	stopDelay  func() bool
	stopExpiry func() bool
	release    func()
}

// start arms the watch after streamWatchDelay; the writer calls it at most once.
func (sw *streamWatch) start() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.stopped {
		return
	}
	gw := sw.gw
	clock := gw.guard.clock
	sw.stopDelay = clock.AfterFunc(streamWatchDelay, func() {
		sw.mu.Lock()
		defer sw.mu.Unlock()
		if sw.stopped {
			return
		}
		revoked, release := gw.guard.v.Watch(gw.claims)
		sw.release = release
		go func() {
			select {
			case <-revoked:
				gw.abort()
			case <-gw.ctx.Done():
			}
		}()
		if gw.expires != 0 {
			sw.stopExpiry = clock.AfterFunc(time.Unix(0, gw.expires).Sub(clock.Now()), gw.abort)
		}
	})
}

// stop ends the watch when the response is over.
func (sw *streamWatch) stop() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.stopped = true
	if sw.stopDelay != nil {
		sw.stopDelay()
	}
	if sw.stopExpiry != nil {
		sw.stopExpiry()
	}
	if sw.release != nil {
		sw.release()
	}
}

// Interface guards.
var (
	_ http.ResponseWriter = (*GuardedWriter)(nil)
	_ io.ReaderFrom       = (*GuardedWriter)(nil)
	_ http.Hijacker       = (*GuardedWriter)(nil)
)
