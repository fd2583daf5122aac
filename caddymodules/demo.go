package caddymodules

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(new(DemoUpstream))
	httpcaddyfile.RegisterHandlerDirective("caracal_demo_upstream", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		m := new(DemoUpstream)
		if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
			return nil, err
		}
		return m, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("caracal_demo_upstream", httpcaddyfile.After, "respond")
}

// DemoUpstream is the small API behind the demo gateway (Caddyfile.example), so the
// quickstart needs no other program. Paths are matched by suffix, so it works behind
// any prefix:
//
//	.../hello            JSON: the identity headers the gateway set
//	.../stream?bytes=N   N bytes (default 16 MiB, at most 1 GiB) in 32 KiB flushed chunks,
//	                     &delay_ms=D between chunks (default 0, at most 1000)
//	.../events           server-sent events: one every interval_ms (default 1000;
//	                     0 sends the headers and then nothing, an idle stream)
type DemoUpstream struct{}

// UnmarshalCaddyfile reads the directive, which takes no arguments:
//
//	caracal_demo_upstream [<matcher>]
func (*DemoUpstream) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("caracal_demo_upstream takes no arguments")
	}
	return nil
}

// CaddyModule returns the Caddy module information.
func (*DemoUpstream) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.caracal_demo_upstream", New: func() caddy.Module { return new(DemoUpstream) }}
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (*DemoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, "/hello"):
		who := map[string]string{}
		for name, v := range r.Header {
			if strings.HasPrefix(name, "X-Caracal-") {
				who[strings.ToLower(strings.TrimPrefix(name, "X-Caracal-"))] = strings.Join(v, ",")
			}
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(map[string]any{"hello": who["sub"], "caracal": who, "mandate_forwarded": r.Header.Get("Authorization") != ""})
	case strings.HasSuffix(p, "/stream"):
		size := queryInt(r, "bytes", 16<<20, 1<<30)
		delay := time.Duration(queryInt(r, "delay_ms", 0, 1000)) * time.Millisecond
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		chunk := make([]byte, 32<<10)
		for i := range chunk {
			chunk[i] = 'a' + byte(i%26)
		}
		rc := http.NewResponseController(w)
		for size > 0 {
			n := min(size, len(chunk))
			if _, err := w.Write(chunk[:n]); err != nil {
				return err
			}
			_ = rc.Flush()
			size -= n
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-r.Context().Done():
					return r.Context().Err()
				}
			}
		}
		return nil
	case strings.HasSuffix(p, "/events"):
		interval := time.Duration(queryInt(r, "interval_ms", 1000, 60_000)) * time.Millisecond
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		var tick <-chan time.Time
		if interval > 0 {
			t := time.NewTicker(interval)
			defer t.Stop()
			tick = t.C
		}
		for i := 1; ; i++ {
			select {
			case <-r.Context().Done():
				return nil
			case now := <-tick:
				if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, now.UTC().Format(time.RFC3339)); err != nil {
					return err
				}
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
	}
	return next.ServeHTTP(w, r)
}

func queryInt(r *http.Request, name string, def, limit int) int {
	v, err := strconv.Atoi(r.URL.Query().Get(name))
	if err != nil || v < 0 {
		return def
	}
	return min(v, limit)
}

var _ caddyhttp.MiddlewareHandler = (*DemoUpstream)(nil)
