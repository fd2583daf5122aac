package coordinator

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/internal/control"
)

func init() {
	caddy.RegisterModule(new(Handler))
	httpcaddyfile.RegisterHandlerDirective("caracal_coordinator", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		m := new(Handler)
		if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
			return nil, err
		}
		return m, nil
	})
	// Next to the STS endpoints, before caracal_mandate.
	httpcaddyfile.RegisterDirectiveOrder("caracal_coordinator", httpcaddyfile.After, "try_files")
}

// Handler serves the Coordinator's admin API (/v1/...) inside a site; other requests go
// to the next handler.
type Handler struct {
	service *control.Service
}

// UnmarshalCaddyfile reads the handler directive, which takes no arguments:
//
//	caracal_coordinator [<matcher>]
func (*Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("caracal_coordinator takes no arguments; configure it with the caracal_coordinator global option")
	}
	return nil
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.caracal_coordinator", New: func() caddy.Module { return new(Handler) }}
}

// Provision finds the caracal_coordinator app.
func (h *Handler) Provision(ctx caddy.Context) error {
	v, err := ctx.AppIfConfigured("caracal_coordinator")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return errors.New("the caracal_coordinator handler needs the caracal_coordinator app: add a caracal_coordinator global option")
	}
	if err != nil {
		return fmt.Errorf("loading caracal_coordinator app: %w", err)
	}
	h.service = v.(*App).service
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if !h.service.Handles(r) {
		return next.ServeHTTP(w, r)
	}
	h.service.ServeHTTP(w, r)
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
