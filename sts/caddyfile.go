package sts

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caracalgw/caracal/internal/caddyfileopts"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("caracal_sts", parseGlobal)
	httpcaddyfile.RegisterHandlerDirective("caracal_sts", parseHandler)
	// After try_files, so the STS endpoints come before caracal_mandate (ordered before
	// basic_auth) whatever the package init order.
	httpcaddyfile.RegisterDirectiveOrder("caracal_sts", httpcaddyfile.After, "try_files")
}

// parseHandler builds the handler from its directive.
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// UnmarshalCaddyfile reads the handler directive, which takes no arguments:
//
//	caracal_sts [<matcher>]
func (*Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() || d.NextBlock(0) {
		return d.Err("caracal_sts takes no arguments; configure it with the caracal_sts global option")
	}
	return nil
}

// parseGlobal parses the caracal_sts global option:
//
//	caracal_sts {
//		base_url             <url>
//		storage              memory | postgres <dsn>
//		key_encryption_key   <base64 or hex>
//		session_lifetime     <duration>
//		max_session_lifetime <duration>
//		mandate_lifetime     <duration>
//		leeway               <duration>
//		refresh_interval     <duration>
//		key_activation_delay <duration>
//		policy_remote        <opa url>
//		policy_timeout       <duration>
//		policy_max_bundle_bytes <bytes>
//		policy_max_modules   <n>
//		policy_max_rules     <n>
//		policy_compile_timeout <duration>
//		policy_max_compilations <n>
//		revocation           local | <redis url> [stream_key <secret>] [stream_prefix <prefix>] [retention <duration>]
//		zone <id> {
//			name        <text>
//			application <client_id> <secret>
//			resource    <identifier> <scopes...>
//			policy      default | <bundle dir>
//			grant       <client_id> <resource> <scopes...>
//		}
//	}
//
// revocation also takes a block holding its settings, one a line. A setting given twice
// in a block is refused; zone, and application, resource and grant inside a zone, may
// repeat. Repeated caracal_sts blocks merge: later settings win, zones accumulate. Value
// rules (base_url required, a key with persistent storage, ...) are Validate's.
func parseGlobal(d *caddyfile.Dispenser, existingVal any) (any, error) {
	app := new(App)
	if err := caddyfileopts.MergeGlobal(existingVal, app); err != nil {
		return nil, err
	}
	for d.Next() {
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		seen := caddyfileopts.NewSeen("caracal_sts", "zone")
		for d.NextBlock(0) {
			if err := seen.Add(d); err != nil {
				return nil, err
			}
			if err := parseGlobalOption(d, app, seen); err != nil {
				return nil, err
			}
		}
	}
	return httpcaddyfile.App{Name: "caracal_sts", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseGlobalOption(d *caddyfile.Dispenser, app *App, seen *caddyfileopts.Seen) error {
	switch d.Val() {
	case "base_url":
		return caddyfileopts.String(d, &app.BaseURL)
	case "storage":
		return app.Storage.UnmarshalCaddyfile(d)
	case "key_encryption_key":
		return caddyfileopts.String(d, &app.KeyEncryptionKey)
	case "session_lifetime":
		return caddyfileopts.Duration(d, &app.SessionLifetime)
	case "max_session_lifetime":
		return caddyfileopts.Duration(d, &app.MaxSessionLifetime)
	case "mandate_lifetime":
		return caddyfileopts.Duration(d, &app.MandateLifetime)
	case "leeway":
		return caddyfileopts.Duration(d, &app.Leeway)
	case "refresh_interval":
		return caddyfileopts.Duration(d, &app.RefreshInterval)
	case "key_activation_delay":
		return caddyfileopts.Duration(d, &app.KeyActivationDelay)
	case "policy_remote":
		return caddyfileopts.String(d, &app.Policy.RemoteURL)
	case "policy_timeout":
		return caddyfileopts.Duration(d, &app.Policy.Timeout)
	case "policy_max_bundle_bytes":
		return intArg(d, &app.Policy.MaxBundleBytes)
	case "policy_max_modules":
		return intArg(d, &app.Policy.MaxModules)
	case "policy_max_rules":
		return intArg(d, &app.Policy.MaxRules)
	case "policy_compile_timeout":
		return caddyfileopts.Duration(d, &app.Policy.CompileTimeout)
	case "policy_max_compilations":
		return intArg(d, &app.Policy.MaxCompilations)
	case "revocation":
		return app.Revocation.UnmarshalCaddyfile(d)
	case "zone":
		return parseZone(d, app)
	default:
		return seen.Unknown(d)
	}
}

func parseZone(d *caddyfile.Dispenser, app *App) error {
	var z ZoneConfig
	if !d.NextArg() {
		return d.Err("zone needs an id")
	}
	z.ID = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := caddyfileopts.NewSeen("zone "+z.ID, "application", "resource", "grant")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.Add(d); err != nil {
			return err
		}
		switch d.Val() {
		case "name":
			if err := caddyfileopts.String(d, &z.Name); err != nil {
				return err
			}
		case "application":
			var a ApplicationConfig
			if !d.Args(&a.ClientID, &a.Secret) || d.NextArg() {
				return d.Err("application takes <client_id> <secret> (an unset or empty {$VAR} leaves the secret out)")
			}
			z.Applications = append(z.Applications, a)
		case "resource":
			var r ResourceConfig
			if !d.NextArg() {
				return d.Err("resource takes <identifier> <scopes...>")
			}
			r.Identifier = d.Val()
			r.Scopes = d.RemainingArgs()
			if len(r.Scopes) == 0 {
				return d.Err("resource takes <identifier> <scopes...>")
			}
			z.Resources = append(z.Resources, r)
		case "policy":
			if err := caddyfileopts.String(d, &z.Policy); err != nil {
				return err
			}
		case "grant":
			var g GrantConfig
			if !d.Args(&g.ClientID, &g.Resource) {
				return d.Err("grant takes <client_id> <resource> <scopes...>")
			}
			g.Scopes = d.RemainingArgs()
			if len(g.Scopes) == 0 {
				return d.Err("grant takes <client_id> <resource> <scopes...>")
			}
			z.Grants = append(z.Grants, g)
		default:
			return seen.Unknown(d)
		}
	}
	for i := range app.Zones {
		if app.Zones[i].ID == z.ID {
			return d.Errf("zone %s is declared twice", z.ID)
		}
	}
	app.Zones = append(app.Zones, z)
	return nil
}

func intArg(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var n int
	if err := caddyfileopts.Int(d, &n); err != nil {
		return err
	}
	if n <= 0 {
		return d.Errf("%s takes a positive integer, got %d", name, n)
	}
	*dst = n
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)
