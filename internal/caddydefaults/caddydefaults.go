// Package caddydefaults is the `caracal` app and its global option: the settings every
// Caracal module of the process shares unless its own configuration says otherwise, so
// that the issuer URL and the revocation transport and stream key are written once:
//
//	{
//		caracal {
//			issuer     https://sts.example/zones/prod
//			revocation redis://127.0.0.1:6379/0 stream_key {$CARACAL_STREAM_KEY}
//		}
//	}
//
// The app holds configuration only; it starts nothing.
package caddydefaults

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caracalgw/caracal/internal/caddyfileopts"
	"github.com/caracalgw/caracal/internal/caddyrevocation"
)

func init() {
	caddy.RegisterModule(new(App))
	httpcaddyfile.RegisterGlobalOption("caracal", parseGlobal)
}

// App is the `caracal` app: process-wide defaults for caracal_mandate, caracal_sts and,
// through the STS, caracal_coordinator.
type App struct {
	// Issuer is the zone issuer URL ({base_url}/zones/{zone}) a caracal_mandate handler
	// uses when it names none.
	Issuer string `json:"issuer,omitempty"`
	// Revocation holds the revocation settings (transport, stream_key, stream_prefix,
	// retention) that the caracal_sts app and every caracal_mandate handler use for
	// each one they leave unset.
	Revocation caddyrevocation.Config `json:"revocation,omitzero"`
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caracal", New: func() caddy.Module { return new(App) }}
}

// Start implements caddy.App; the app has nothing to run.
func (*App) Start() error { return nil }

// Stop implements caddy.App.
func (*App) Stop() error { return nil }

// Validate refuses settings no module could use. Each module checks the values it takes
// (the issuer's form, the stream key's length) when it is provisioned.
func (a *App) Validate() error {
	if a.Revocation.Transport == "local" && a.Revocation.StreamPrefix != "" {
		return errors.New("revocation: stream_prefix applies to Redis only, and the transport is local")
	}
	return nil
}

// Of returns the defaults of ctx's configuration: the zero App when it has no caracal app.
func Of(ctx caddy.Context) (App, error) {
	v, err := ctx.AppIfConfigured("caracal")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return App{}, nil
	}
	if err != nil {
		return App{}, err
	}
	a, ok := v.(*App)
	if !ok {
		return App{}, errors.New("the caracal app is not Caracal's defaults app")
	}
	return *a, nil
}

// parseGlobal parses the caracal global option:
//
//	caracal {
//		issuer     <zone issuer URL>
//		revocation local | <redis url> [stream_key <secret>] [stream_prefix <prefix>] [retention <duration>]
//		stream_key <secret>
//	}
//
// revocation also takes the block form of the directive of the same name; stream_key
// outside it sets the same setting, for a process whose transport comes from elsewhere
// (the local bus by default). A setting given twice in a block is refused; of repeated
// caracal blocks, the later settings win.
func parseGlobal(d *caddyfile.Dispenser, existingVal any) (any, error) {
	app := new(App)
	if err := caddyfileopts.MergeGlobal(existingVal, app); err != nil {
		return nil, err
	}
	for d.Next() {
		if d.NextArg() {
			return nil, d.Errf("caracal takes no arguments, only a block, got %q", d.Val())
		}
		seen := caddyfileopts.NewSeen("caracal")
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			if err := seen.Add(d); err != nil {
				return nil, err
			}
			switch d.Val() {
			case "issuer":
				if err := caddyfileopts.String(d, &app.Issuer); err != nil {
					return nil, err
				}
			case "revocation":
				var rc caddyrevocation.Config
				if err := rc.UnmarshalCaddyfile(d); err != nil {
					return nil, err
				}
				if rc.StreamKey != "" {
					if err := seen.AddName(d, "stream_key"); err != nil {
						return nil, err
					}
				}
				app.Revocation = rc.WithDefaults(app.Revocation)
			case "stream_key":
				if err := caddyfileopts.String(d, &app.Revocation.StreamKey); err != nil {
					return nil, err
				}
			default:
				return nil, seen.Unknown(d)
			}
		}
	}
	return httpcaddyfile.App{Name: "caracal", Value: caddyconfig.JSON(app, nil)}, nil
}

// Interface guards.
var (
	_ caddy.App       = (*App)(nil)
	_ caddy.Validator = (*App)(nil)
)
