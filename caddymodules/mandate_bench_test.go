package caddymodules

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/verify"
)

// armingClock is the system clock except that a timer of at most a second (the stream
// watch's delay) fires at once, on a goroutine of its own, and signals fired when its
// function has returned: a response that is a stream gets its revocation watch in place
// while it runs, however short it is.
type armingClock struct{ fired chan struct{} }

func (armingClock) Now() time.Time { return time.Now() }

func (c armingClock) AfterFunc(d time.Duration, f func()) func() bool {
	if d > time.Second {
		return time.AfterFunc(d, f).Stop
	}
	go func() {
		f()
		c.fired <- struct{}{}
	}()
	return func() bool { return false }
}

// BenchmarkHandler is the gateway's own cost per request with a warm verification cache:
// ServeHTTP around a next handler that writes a small response, against the next handler
// called directly. The rows:
//
//   - sized: the response has a small Content-Length, so it is not watched.
//   - unsized-unarmed: no Content-Length, so the response is a stream whose watch is
//     scheduled on the system clock's timer; the response ends within the watch's delay,
//     so the timer is stopped and the watch never registered (the common case of a
//     short streamed answer).
//   - unsized-armed: the same response with the watch in place before it ends: the
//     timer fires at once and the next handler waits for it, so each request registers
//     and releases a revocation watch and its goroutine (plus the handoff to the timer's
//     goroutine, which the direct row pays too).
func BenchmarkHandler(b *testing.B) {
	f := newFixture(b)
	h := f.newHandler(b, &Handler{Scopes: []string{"read"}})
	h.logger = caddy.Log()
	token, _ := f.token(b, nil)
	body := []byte("hello")
	fired := make(chan struct{}, 1)
	rows := []struct {
		name  string
		sized bool
		clock verify.Clock
		wait  bool
	}{
		{"sized", true, verify.SystemClock, false},
		{"unsized-unarmed", false, verify.SystemClock, false},
		{"unsized-armed", false, armingClock{fired}, true},
	}
	for _, row := range rows {
		h.clock = row.clock
		if err := h.newGuard(); err != nil {
			b.Fatal(err)
		}
		guard := h.guard
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
			if row.sized {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			}
			_, err := w.Write(body)
			return err
		})
		direct, guarded := next, next
		if row.wait {
			// The direct row pays the same handoff: a goroutine that signals fired.
			direct = func(w http.ResponseWriter, r *http.Request) error {
				err := next(w, r)
				go func() { fired <- struct{}{} }()
				<-fired
				return err
			}
			guarded = func(w http.ResponseWriter, r *http.Request) error {
				err := next(w, r)
				<-fired
				return err
			}
		}
		run := func(b *testing.B, serve func(w http.ResponseWriter, r *http.Request) error) {
			repl := caddy.NewReplacer()
			req := httptest.NewRequest(http.MethodGet, "https://api.test/x", nil)
			req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
			b.ReportAllocs()
			for b.Loop() {
				req.Header.Set("Authorization", "Bearer "+token)
				rec := httptest.NewRecorder()
				if err := serve(rec, req); err != nil || rec.Code != http.StatusOK {
					b.Fatal(rec.Code, err)
				}
			}
		}
		b.Run("direct/"+row.name, func(b *testing.B) { run(b, direct.ServeHTTP) })
		b.Run("caracal_mandate/"+row.name, func(b *testing.B) {
			h.guard = guard
			run(b, func(w http.ResponseWriter, r *http.Request) error { return h.ServeHTTP(w, r, guarded) })
		})
	}
}

// BenchmarkHandlerCold is a first-seen mandate through ServeHTTP with a sized response:
// every request carries a token the verifier has not seen (signed beforehand, off the
// clock, in batches), so each pays the whole verification: parsing, the ES256 signature
// check, the claims and the verified-token cache's insertion. Compare with mandate's
// BenchmarkRawES256Verify, the floor.
func BenchmarkHandlerCold(b *testing.B) {
	f := newFixture(b)
	h := f.newHandler(b, &Handler{Scopes: []string{"read"}})
	h.logger = caddy.Log()
	body := []byte("hello")
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, err := w.Write(body)
		return err
	})
	repl := caddy.NewReplacer()
	req := httptest.NewRequest(http.MethodGet, "https://api.test/x", nil)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, repl))
	const batch = 1024
	var tokens []string
	b.ReportAllocs()
	for b.Loop() {
		if len(tokens) == 0 {
			b.StopTimer()
			for range batch {
				tok, _ := f.token(b, nil)
				tokens = append(tokens, "Bearer "+tok)
			}
			b.StartTimer()
		}
		req.Header.Set("Authorization", tokens[len(tokens)-1])
		tokens = tokens[:len(tokens)-1]
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req, next); err != nil || rec.Code != http.StatusOK {
			b.Fatal(rec.Code, err)
		}
	}
}
