// Package sts is the Caddy glue of the Caracal STS: the `caracal_sts` app (configured by
// the global option of the same name) and the `caracal_sts` HTTP handler that serves the
// token, revocation, JWKS and metadata endpoints of docs/protocol.md section 2 inside a site.
package sts

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/caddydefaults"
	"github.com/caracalgw/caracal/internal/caddyrevocation"
	"github.com/caracalgw/caracal/internal/caddystore"
	"github.com/caracalgw/caracal/internal/harden"
	"github.com/caracalgw/caracal/internal/issuer"
	"github.com/caracalgw/caracal/internal/keys"
	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/policies"
	"github.com/caracalgw/caracal/revocation"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the STS: the only issuer of mandates.
type App struct {
	// BaseURL is the STS's external URL; a zone's issuer is {base_url}/zones/{zone}.
	BaseURL string `json:"base_url"`
	// Storage selects the store (memory by default, or postgres with a dsn).
	Storage caddystore.Config `json:"storage,omitempty"`
	// KeyEncryptionKey seals zone private keys at rest (AES-256-GCM): 32 bytes as base64 or
	// hex, usually a placeholder such as {env.CARACAL_KEK}. Required with PostgreSQL; with
	// the memory store a random per-process key is used when it is absent.
	KeyEncryptionKey string `json:"key_encryption_key,omitempty"`
	// SessionLifetime of session mandates (default 1h), capped by MaxSessionLifetime.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`
	// MaxSessionLifetime caps the lifetime of a session mandate, whatever the client asks
	// for (default 24h).
	MaxSessionLifetime caddy.Duration `json:"max_session_lifetime,omitempty"`
	// MandateLifetime of resource mandates (default 5m, at most 15m).
	MandateLifetime caddy.Duration `json:"mandate_lifetime,omitempty"`
	// Leeway for exp/nbf/iat checks of subject tokens (default 30s).
	Leeway caddy.Duration `json:"leeway,omitempty"`
	// KeyActivationDelay is how long a key rotation publishes the next key in the JWKS
	// before signing with it (default 6m: the JWKS max-age of 300 s, the verifiers'
	// 30 s refetch interval and 30 s of margin), so that no verifier meets a kid it has
	// not fetched. An immediate rotation does not wait.
	KeyActivationDelay caddy.Duration `json:"key_activation_delay,omitempty"`
	// RefreshInterval bounds how long changes made by another process (keys, policy,
	// resources) take to be seen here (default 5s).
	RefreshInterval caddy.Duration `json:"refresh_interval,omitempty"`
	// Policy configures the policy gate (embedded OPA by default).
	Policy PolicyConfig `json:"policy,omitzero"`
	// Zones are created or updated at start, so a configuration alone runs a deployment.
	Zones []ZoneConfig `json:"zones,omitempty"`
	// Revocation is where revocations are published: the in-process bus (default) or
	// Redis. The STS relays its storage outbox there. Settings left unset come from the
	// caracal global option.
	Revocation caddyrevocation.Config `json:"revocation,omitzero"`

	runtime  *caddystore.Runtime
	engine   policy.Engine
	service  *issuer.Service
	pipeline *caddyrevocation.Handle
	// stopKeys ends the subscription to key changes of every zone (see Start).
	stopKeys func()
	specs    []issuer.ZoneSpec
	logger   *zap.Logger
}

// PolicyConfig selects the policy engine.
type PolicyConfig struct {
	// RemoteURL, when set, sends every decision to this OPA server
	// (POST {url}/v1/data/caracal/authz/decision) instead of the embedded engine.
	RemoteURL string `json:"remote_url,omitempty"`
	// Timeout of one evaluation (default 100ms); a timeout is a deny.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// MaxBundleBytes caps the size of one uploaded or configured bundle for the
	// embedded engine (default 256 KiB).
	MaxBundleBytes int `json:"max_bundle_bytes,omitempty"`
	// MaxModules caps the number of Rego modules of a bundle (default 64).
	MaxModules int `json:"max_modules,omitempty"`
	// MaxRules caps the number of rules of a bundle (default 2000).
	MaxRules int `json:"max_rules,omitempty"`
	// CompileTimeout bounds the compilation of one bundle (default 2s).
	CompileTimeout caddy.Duration `json:"compile_timeout,omitempty"`
	// MaxCompilations is how many bundles compile at once over all zones (default 2;
	// one per zone).
	MaxCompilations int `json:"max_compilations,omitempty"`
}

// ZoneConfig declares a zone.
type ZoneConfig struct {
	// ID is the zone's identifier, the last segment of its issuer URL.
	ID string `json:"id"`
	// Name is a display name (default: the ID).
	Name string `json:"name,omitempty"`
	// Applications are the zone's OAuth clients, created or updated at start.
	Applications []ApplicationConfig `json:"applications,omitempty"`
	// Resources are the zone's resources and the scopes each defines.
	Resources []ResourceConfig `json:"resources,omitempty"`
	// Policy is "default" (the bundled default policy) or a directory holding a bundle
	// (.rego modules and an optional data.json). Empty leaves the zone's policy as it is.
	Policy string `json:"policy,omitempty"`
	// Grants are merged into the data document's "grants" object:
	// grants[client_id][resource] = scopes.
	Grants []GrantConfig `json:"grants,omitempty"`
}

// ApplicationConfig declares an application.
type ApplicationConfig struct {
	// ClientID is the application's OAuth client_id.
	ClientID string `json:"client_id"`
	// Name is a display name (default: the client_id).
	Name string `json:"name,omitempty"`
	// Secret is the client secret, usually a placeholder such as {env.AGENT_SECRET};
	// only its hash is stored.
	Secret string `json:"secret"`
}

// ResourceConfig declares a resource and its scopes.
type ResourceConfig struct {
	// Identifier is the resource's identifier (RFC 8707), the aud of its mandates.
	Identifier string `json:"identifier"`
	// Scopes are the scopes the resource defines.
	Scopes []string `json:"scopes"`
}

// GrantConfig grants a client scopes on a resource in the default policy's data.
type GrantConfig struct {
	// ClientID is the application granted the scopes.
	ClientID string `json:"client_id"`
	// Resource is the identifier of the resource the scopes are on.
	Resource string `json:"resource"`
	// Scopes are the granted scopes.
	Scopes []string `json:"scopes"`
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caracal_sts", New: func() caddy.Module { return new(App) }}
}

// memoryKEK is this process's key-encryption key for the memory store; it must outlive a
// config reload because the memory store does.
var memoryKEK = sync.OnceValues(func() ([]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return k, err
})

// Provision opens the storage runtime (connecting and checking the schema, without
// writing), builds the policy engine and the STS, and checks the declared zones. The
// zones are written at Start.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	defaults, err := caddydefaults.Of(ctx)
	if err != nil {
		return err
	}
	a.Revocation = a.Revocation.WithDefaults(defaults.Revocation)
	harden.LogApp(a.logger, "caracal_sts", a)
	repl := caddy.NewReplacer()
	// Caddy validates after provisioning; nothing below is opened for a configuration
	// that Validate refuses.
	if err := a.Validate(); err != nil {
		return err
	}
	kek, err := a.kek(repl)
	if err != nil {
		return err
	}
	if a.runtime, err = caddystore.Open(a.Storage); err != nil {
		return err
	}
	if a.pipeline, err = caddyrevocation.Open(ctx, a.Revocation, a.logger); err != nil {
		return err
	}
	registerRelayMetrics(ctx.GetMetricsRegistry(), caddystore.RunningRelays)
	compiler := policy.NewCompiler(policy.CompilerOptions{
		Limits: policy.Limits{
			MaxBundleBytes: a.Policy.MaxBundleBytes,
			MaxModules:     a.Policy.MaxModules,
			MaxRules:       a.Policy.MaxRules,
			CompileTimeout: time.Duration(a.Policy.CompileTimeout),
		},
		MaxConcurrent: a.Policy.MaxCompilations,
	})
	if a.Policy.RemoteURL != "" {
		a.engine, err = policy.NewRemote(policy.RemoteOptions{URL: repl.ReplaceKnown(a.Policy.RemoteURL, ""), Timeout: time.Duration(a.Policy.Timeout), Logger: a.logger})
		if err != nil {
			return fmt.Errorf("remote policy: %w", err)
		}
	} else {
		a.engine = policy.NewEmbedded(policy.EmbeddedOptions{Timeout: time.Duration(a.Policy.Timeout), Logger: a.logger, Compiler: compiler})
	}
	a.service, err = issuer.New(issuer.Options{
		BaseURL:            repl.ReplaceKnown(a.BaseURL, ""),
		Store:              a.runtime.Store(),
		Policy:             a.engine,
		Compiler:           compiler,
		KEK:                kek,
		SessionLifetime:    time.Duration(a.SessionLifetime),
		MaxSessionLifetime: time.Duration(a.MaxSessionLifetime),
		MandateLifetime:    time.Duration(a.MandateLifetime),
		Leeway:             time.Duration(a.Leeway),
		RefreshInterval:    time.Duration(a.RefreshInterval),
		KeyActivationDelay: time.Duration(a.KeyActivationDelay),
		Revoked:            a.runtime.Notify,
		Published:          a.runtime.Flush,
		Revocations:        a.pipeline.Revocations,
		RevocationSource:   a.pipeline.Source,
		Epochs:             a.pipeline.Epochs,
		Logger:             a.logger,
		ClientIP:           clientIP,
	})
	if err != nil {
		return err
	}
	if a.specs, err = a.zoneSpecs(repl); err != nil {
		return err
	}
	if err := a.checkZones(ctx); err != nil {
		return err
	}
	return nil
}

// checkZones refuses, at provision time and without storage, what Bootstrap would
// refuse at start: a bad zone id, an application without a client id or secret, a bad
// resource, a policy bundle that does not compile.
func (a *App) checkZones(ctx context.Context) error {
	for _, z := range a.specs {
		if !mandate.ValidZoneID(z.ID) {
			return fmt.Errorf("zone id %q does not match %s", z.ID, mandate.ZoneIDSyntax)
		}
		for _, app := range z.Applications {
			if app.ClientID == "" || app.Secret == "" {
				return fmt.Errorf("zone %s: application %q needs a client id and a secret", z.ID, app.ClientID)
			}
		}
		for _, r := range z.Resources {
			if err := issuer.ValidateResource(r.Identifier, r.Scopes); err != nil {
				return fmt.Errorf("zone %s: %w", z.ID, err)
			}
		}
		if z.Policy != nil {
			compiled, err := a.service.CompilePolicy(ctx, z.ID, z.Policy.Modules, z.Policy.Data)
			if err != nil {
				return fmt.Errorf("zone %s: policy bundle: %w", z.ID, err)
			}
			// Bootstrap, at start, installs this instead of compiling the bundle again.
			z.Policy.Compiled = compiled
		}
	}
	return nil
}

// RevocationConfig is the STS's revocation transport and key, which a caracal_mandate
// handler of the same process uses when it has no revocation line of its own.
func (a *App) RevocationConfig() caddyrevocation.Config { return a.Revocation }

func (a *App) kek(repl *caddy.Replacer) ([]byte, error) {
	raw := repl.ReplaceKnown(a.KeyEncryptionKey, "")
	if raw != "" {
		k, err := keys.ParseKEK(raw)
		if err != nil {
			return nil, fmt.Errorf("key_encryption_key: %w", err)
		}
		return k, nil
	}
	if a.persistent() {
		return nil, errors.New("key_encryption_key is empty after placeholders were replaced; it is required with persistent storage (32 bytes, base64 or hex)")
	}
	return memoryKEK()
}

// zoneSpecs turns the declared zones into bootstrap specs, reading policy bundles and
// expanding secret placeholders.
func (a *App) zoneSpecs(repl *caddy.Replacer) ([]issuer.ZoneSpec, error) {
	specs := make([]issuer.ZoneSpec, 0, len(a.Zones))
	for _, zc := range a.Zones {
		spec := issuer.ZoneSpec{ID: zc.ID, Name: zc.Name}
		if spec.Name == "" {
			spec.Name = zc.ID
		}
		for _, ac := range zc.Applications {
			sec := repl.ReplaceKnown(ac.Secret, "")
			name := ac.Name
			if name == "" {
				name = ac.ClientID
			}
			spec.Applications = append(spec.Applications, issuer.ApplicationSpec{ClientID: ac.ClientID, Name: name, Secret: sec})
		}
		for _, rc := range zc.Resources {
			spec.Resources = append(spec.Resources, issuer.ResourceSpec{Identifier: rc.Identifier, Scopes: rc.Scopes})
		}
		if zc.Policy != "" {
			bundle, err := loadBundle(zc.Policy, zc.Grants)
			if err != nil {
				return nil, fmt.Errorf("zone %s: %w", zc.ID, err)
			}
			spec.Policy = bundle
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// loadBundle reads "default" or a bundle directory and merges the declared grants into
// its data document.
func loadBundle(source string, grants []GrantConfig) (*issuer.PolicySpec, error) {
	var modules map[string]string
	var data json.RawMessage
	if source == "default" {
		modules, data = policies.Default()
	} else {
		var err error
		if modules, data, err = policies.Load(os.DirFS(source), "."); err != nil {
			return nil, fmt.Errorf("policy bundle %s: %w", source, err)
		}
	}
	if len(grants) == 0 {
		return &issuer.PolicySpec{Modules: modules, Data: data}, nil
	}
	doc := map[string]any{}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("policy data document: %w", err)
		}
	}
	g, _ := doc["grants"].(map[string]any)
	if g == nil {
		g = map[string]any{}
	}
	for _, gr := range grants {
		perClient, _ := g[gr.ClientID].(map[string]any)
		if perClient == nil {
			perClient = map[string]any{}
		}
		perClient[gr.Resource] = gr.Scopes
		g[gr.ClientID] = perClient
	}
	doc["grants"] = g
	merged, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("policy data document: %w", err)
	}
	return &issuer.PolicySpec{Modules: modules, Data: merged}, nil
}

// Start sets the storage up (migrations, then the declared zones, under the storage-wide
// lock) and runs the outbox relay and the retention purge of this storage and
// revocation transport, unless a configuration being replaced already runs them.
func (a *App) Start() error {
	if err := a.runtime.Start(func(ctx context.Context) error {
		if err := a.service.Bootstrap(ctx, a.specs); err != nil {
			return fmt.Errorf("bootstrapping zones: %w", err)
		}
		return nil
	}); err != nil {
		return err
	}
	// Storage keeps what the streams keep: the revocation retention is the horizon.
	if err := a.runtime.StartRelay(caddystore.RelayOptions{Pipeline: a.pipeline, Horizon: time.Duration(a.Revocation.Retention), KeyRetention: a.service.KeyRetention(), Logger: a.logger}); err != nil {
		return err
	}
	if a.pipeline.Keys != nil {
		// A key change made by another STS process (an emergency rotation above all)
		// reaches this one on the caracal.keys stream: drop the zone's cached keys so the
		// next request reads them from storage, where the change was written first,
		// instead of trusting a revoked key for up to refresh_interval.
		a.stopKeys = a.pipeline.Keys.SubscribeAll(func(e revocation.KeysEvent) {
			a.logger.Info("zone key change on the revocation stream; reloading the zone's keys", zap.String("zone", e.ZoneID), zap.String("event", e.Event), zap.String("kid", e.KID))
			a.service.Invalidate(e.ZoneID)
		})
	}
	return nil
}

// Stop drops this app's use of the relay; it stops once no started configuration uses
// it. Rows it did not publish stay in the outbox for the next one.
func (a *App) Stop() error {
	if a.stopKeys != nil {
		a.stopKeys()
		a.stopKeys = nil
	}
	a.runtime.StopRelay()
	return nil
}

// Cleanup releases the shared storage runtime and revocation pipeline.
func (a *App) Cleanup() error {
	return errors.Join(a.pipeline.Release(), a.runtime.Release())
}

// Service returns the STS core, for the handler and the Coordinator.
func (a *App) Service() *issuer.Service { return a.service }

// MandateLeeway returns the configured clock leeway of mandate time checks (zero for
// the default), for the Coordinator to verify session mandates as the STS does.
func (a *App) MandateLeeway() time.Duration { return time.Duration(a.Leeway) }

// StorageConfig returns the storage settings, so that the Coordinator in the same
// configuration can share the store.
func (a *App) StorageConfig() caddystore.Config { return a.Storage }

// Interface guards.
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
