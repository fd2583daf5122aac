// Package coordinator is the Caddy glue of the Caracal Coordinator, the control plane that
// owns zones, applications, resources, policies, sessions and the delegation graph: the
// `caracal_coordinator` app (global option of the same name) and the
// `caracal_coordinator` handler that serves the admin API (docs/protocol.md section 5) in a site.
package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/caddyfileopts"
	"github.com/caracalgw/caracal/internal/caddystore"
	"github.com/caracalgw/caracal/internal/control"
	"github.com/caracalgw/caracal/internal/issuer"
)

func init() {
	caddy.RegisterModule(new(App))
	httpcaddyfile.RegisterGlobalOption("caracal_coordinator", parseGlobal)
}

// DefaultSweepInterval is how often expired delegation edges are marked expired.
const DefaultSweepInterval = 30 * time.Second

// App is the Coordinator. It uses the caracal_sts app of the same configuration for zone
// keys, issuer URLs and policy reloads (the STS app need not serve its endpoints in this
// process), and its storage runtime: one store, and one outbox relay that publishes the
// revocations made here as well as the STS's.
type App struct {
	// Storage, when set, must select the caracal_sts app's storage (the Coordinator
	// always uses that one); it is accepted for older configurations and refused when
	// it differs.
	Storage *caddystore.Config `json:"storage,omitempty"`
	// BootstrapToken is the global admin token, usually a placeholder such as
	// {env.CARACAL_ADMIN_TOKEN}. At least 16 characters; empty disables it, leaving only
	// minted tokens.
	BootstrapToken string `json:"bootstrap_token,omitempty"`
	// SweepInterval is how often expired delegation edges are marked expired, bumping the
	// zone epoch (default 30s).
	SweepInterval caddy.Duration `json:"sweep_interval,omitempty"`

	runtime *caddystore.Runtime
	service *control.Service
	logger  *zap.Logger
	stop    context.CancelFunc
	done    chan struct{}
}

// stsApp is what the Coordinator needs from the caracal_sts app.
type stsApp interface {
	Service() *issuer.Service
	StorageConfig() caddystore.Config
	MandateLeeway() time.Duration
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caracal_coordinator", New: func() caddy.Module { return new(App) }}
}

// Provision takes a reference on the STS's storage runtime and builds the admin API.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	v, err := ctx.AppIfConfigured("caracal_sts")
	if errors.Is(err, caddy.ErrNotConfigured) {
		return errors.New("the Coordinator needs the caracal_sts app in the same configuration (for zone keys and issuers): add a caracal_sts { base_url … } global option")
	}
	if err != nil {
		return err
	}
	sts, ok := v.(stsApp)
	if !ok {
		return errors.New("the caracal_sts app of this configuration is not Caracal's STS")
	}
	cfg := sts.StorageConfig()
	if a.Storage != nil {
		same, err := a.Storage.Same(cfg)
		if err != nil {
			return err
		}
		if !same {
			return errors.New("storage differs from the caracal_sts app's; the Coordinator uses the STS's storage (whose outbox relay publishes its revocations): remove the storage option here")
		}
	}
	if a.runtime, err = caddystore.Open(cfg); err != nil {
		return err
	}
	a.service, err = control.New(control.Options{
		Store:          a.runtime.Store(),
		STS:            sts.Service(),
		BootstrapToken: caddy.NewReplacer().ReplaceKnown(a.BootstrapToken, ""),
		Notify:         a.runtime.Notify,
		Leeway:         sts.MandateLeeway(),
		Logger:         a.logger,
	})
	if err != nil {
		return err
	}
	return nil
}

// Validate checks the configuration. The admin API checks the bootstrap token's length
// once placeholders are replaced, when Provision builds it.
func (a *App) Validate() error {
	if a.SweepInterval < 0 {
		return errors.New("sweep_interval must be positive")
	}
	return nil
}

// Start runs the expiry sweeper.
func (a *App) Start() error {
	interval := time.Duration(a.SweepInterval)
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop, a.done = cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := a.service.SweepExpired(ctx); err != nil && ctx.Err() == nil {
					a.logger.Warn("sweeping expired delegation edges failed", zap.Error(err))
				}
			}
		}
	}()
	return nil
}

// Stop stops the sweeper.
func (a *App) Stop() error {
	if a.stop != nil {
		a.stop()
		<-a.done
	}
	return nil
}

// Cleanup releases the shared storage runtime.
func (a *App) Cleanup() error { return a.runtime.Release() }

// parseGlobal parses the following; each setting is given at most once in a block, and
// value rules are Validate's:
//
//	caracal_coordinator {
//		storage         memory | postgres <dsn>  # only the caracal_sts app's storage is accepted
//		bootstrap_token <token>
//		sweep_interval  <duration>
//	}
func parseGlobal(d *caddyfile.Dispenser, existingVal any) (any, error) {
	app := new(App)
	if err := caddyfileopts.MergeGlobal(existingVal, app); err != nil {
		return nil, err
	}
	for d.Next() {
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		seen := caddyfileopts.NewSeen("caracal_coordinator")
		for d.NextBlock(0) {
			if err := seen.Add(d); err != nil {
				return nil, err
			}
			var err error
			switch d.Val() {
			case "storage":
				var c caddystore.Config
				err = c.UnmarshalCaddyfile(d)
				app.Storage = &c
			case "bootstrap_token":
				err = caddyfileopts.String(d, &app.BootstrapToken)
			case "sweep_interval":
				err = caddyfileopts.Duration(d, &app.SweepInterval)
			default:
				return nil, seen.Unknown(d)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return httpcaddyfile.App{Name: "caracal_coordinator", Value: caddyconfig.JSON(app, nil)}, nil
}

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
