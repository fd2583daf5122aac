package sts

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/internal/issuer"
)

func init() {
	caddy.RegisterModule(new(Handler))
}

// Handler serves the STS endpoints of the caracal_sts app inside a site; requests for
// other paths go to the next handler.
type Handler struct {
	service *issuer.Service
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.caracal_sts", New: func() caddy.Module { return new(Handler) }}
}

// Provision finds the caracal_sts app.
func (h *Handler) Provision(ctx caddy.Context) error {
	appVal, err := ctx.AppIfConfigured("caracal_sts")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return errors.New("the caracal_sts handler needs the caracal_sts app: add a caracal_sts { base_url ... } global option")
	}
	if err != nil {
		return fmt.Errorf("loading caracal_sts app: %w", err)
	}
	h.service = appVal.(*App).service
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
)
