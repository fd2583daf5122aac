// Package coordinator is the Caddy glue of the Caracal Coordinator, the control plane that
// owns zones, applications, resources, policies, sessions and the delegation graph.
package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/caddystore"
)

func init() {
	caddy.RegisterModule(new(App))
	httpcaddyfile.RegisterGlobalOption("caracal_coordinator", parseGlobal)
}

// App is the Coordinator app. It opens the configured storage when provisioned.
type App struct {
	// Storage selects the store. When absent, the store of the caracal_sts app in the same
	// configuration is used (both share one pool per DSN either way).
	Storage *caddystore.Config `json:"storage,omitempty"`

	store  *caddystore.Handle
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caracal_coordinator", New: func() caddy.Module { return new(App) }}
}

// Provision opens the storage.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	cfg := a.Storage
	if cfg == nil {
		stsCfg, err := stsStorage(ctx)
		if err != nil {
			return err
		}
		cfg = &stsCfg
	}
	h, err := caddystore.Open(ctx, *cfg)
	if err != nil {
		return fmt.Errorf("caracal_coordinator: %w", err)
	}
	a.store = h
	return nil
}

// stsStorage reads the storage settings of the caracal_sts app, if it is configured.
func stsStorage(ctx caddy.Context) (caddystore.Config, error) {
	v, err := ctx.AppIfConfigured("caracal_sts")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return caddystore.Config{}, errors.New("caracal_coordinator: set storage, or configure the caracal_sts app whose storage it then shares")
	}
	if err != nil {
		return caddystore.Config{}, fmt.Errorf("caracal_coordinator: %w", err)
	}
	s, ok := v.(interface{ StorageConfig() caddystore.Config })
	if !ok {
		return caddystore.Config{}, errors.New("caracal_coordinator: the caracal_sts app does not expose its storage")
	}
	return s.StorageConfig(), nil
}

// Start implements caddy.App.
func (a *App) Start() error { return nil }

// Stop implements caddy.App.
func (a *App) Stop() error { return nil }

// Cleanup releases the shared store.
func (a *App) Cleanup() error { return a.store.Release() }

// parseGlobal parses:
//
//	caracal_coordinator {
//		storage memory | postgres <dsn>
//	}
func parseGlobal(d *caddyfile.Dispenser, existingVal any) (any, error) {
	app := new(App)
	if existing, ok := existingVal.(httpcaddyfile.App); ok {
		if err := json.Unmarshal(existing.Value, app); err != nil {
			return nil, err
		}
	}
	for d.Next() {
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		for d.NextBlock(0) {
			switch d.Val() {
			case "storage":
				var c caddystore.Config
				if err := c.UnmarshalCaddyfile(d); err != nil {
					return nil, err
				}
				app.Storage = &c
			default:
				return nil, d.Errf("unrecognized caracal_coordinator option %q", d.Val())
			}
		}
	}
	return httpcaddyfile.App{Name: "caracal_coordinator", Value: caddyconfig.JSON(app, nil)}, nil
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
