package sts

import (
	"encoding/json"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("caracal_sts", parseGlobal)
	httpcaddyfile.RegisterHandlerDirective("caracal_sts", parseHandler)
	// After try_files, so the STS endpoints come before caracal_mandate (ordered before
	// basic_auth) whatever the package init order.
	httpcaddyfile.RegisterDirectiveOrder("caracal_sts", httpcaddyfile.After, "try_files")
}

// parseHandler parses the handler directive, which takes no arguments:
//
//	caracal_sts [<matcher>]
func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next()
	if h.NextArg() || h.NextBlock(0) {
		return nil, h.Err("caracal_sts takes no arguments; configure it with the caracal_sts global option")
	}
	return new(Handler), nil
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
//		revocation           local | <redis url> {
//			stream_key    <secret>
//			stream_prefix <prefix>
//			retention     <duration>
//		}
//		zone <id> {
//			name        <text>
//			application <client_id> <secret>
//			resource    <identifier> <scopes...>
//			policy      default | <bundle dir>
//			grant       <client_id> <resource> <scopes...>
//		}
//	}
//
// Repeated caracal_sts blocks merge: later settings win, zones accumulate.
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
			if err := parseGlobalOption(d, app); err != nil {
				return nil, err
			}
		}
	}
	return httpcaddyfile.App{Name: "caracal_sts", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseGlobalOption(d *caddyfile.Dispenser, app *App) error {
	switch d.Val() {
	case "base_url":
		return oneArg(d, &app.BaseURL)
	case "storage":
		return app.Storage.UnmarshalCaddyfile(d)
	case "key_encryption_key":
		return oneArg(d, &app.KeyEncryptionKey)
	case "session_lifetime":
		return durationArg(d, &app.SessionLifetime)
	case "max_session_lifetime":
		return durationArg(d, &app.MaxSessionLifetime)
	case "mandate_lifetime":
		return durationArg(d, &app.MandateLifetime)
	case "leeway":
		return durationArg(d, &app.Leeway)
	case "refresh_interval":
		return durationArg(d, &app.RefreshInterval)
	case "key_activation_delay":
		return durationArg(d, &app.KeyActivationDelay)
	case "policy_remote":
		return oneArg(d, &app.Policy.RemoteURL)
	case "policy_timeout":
		return durationArg(d, &app.Policy.Timeout)
	case "policy_max_bundle_bytes":
		return intArg(d, &app.Policy.MaxBundleBytes)
	case "policy_max_modules":
		return intArg(d, &app.Policy.MaxModules)
	case "policy_max_rules":
		return intArg(d, &app.Policy.MaxRules)
	case "policy_compile_timeout":
		return durationArg(d, &app.Policy.CompileTimeout)
	case "policy_max_compilations":
		return intArg(d, &app.Policy.MaxCompilations)
	case "revocation":
		return app.Revocation.UnmarshalCaddyfile(d)
	case "zone":
		return parseZone(d, app)
	default:
		return d.Errf("unrecognized caracal_sts option %q", d.Val())
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
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "name":
			if err := oneArg(d, &z.Name); err != nil {
				return err
			}
		case "application":
			var a ApplicationConfig
			if !d.Args(&a.ClientID, &a.Secret) || d.NextArg() {
				return d.Err("application takes <client_id> <secret>")
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
			if err := oneArg(d, &z.Policy); err != nil {
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
			return d.Errf("unrecognized zone option %q", d.Val())
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

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

func intArg(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return d.Errf("%s takes a positive integer, got %q", name, s)
	}
	*dst = n
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("parsing %s: %v", d.Val(), err)
	}
	*dst = caddy.Duration(dur)
	return nil
}
