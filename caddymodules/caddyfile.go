package caddymodules

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"

	"github.com/caracalgw/caracal/internal/caddyfileopts"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("caracal_mandate", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("caracal_mandate", httpcaddyfile.Before, "basic_auth")
}

// parseCaddyfile builds the handler from its directive.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	caracal_mandate [<matcher>] {
//		issuer           <zone issuer URL>
//		resource         <identifier>
//		scopes           <scope...>
//		revocation       local | <redis URL> [stream_key <secret>] [stream_prefix <prefix>] [retention <duration>]
//		max_staleness    <duration>
//		on_stale         deny | allow
//		check_bytes      <n>
//		leeway           <duration>
//		forward_mandate  on | off
//		end_on_expiry    on | off
//		reject_stale_epoch
//		tls_trust_pool   <module> {
//			...
//		}
//		jwks_file        <path>
//		exchange [<token endpoint>] {
//			renew_before <duration>
//		}
//	}
//
// revocation also takes a block holding the same settings, one a line. scopes may be
// repeated (the lists add up); every other subdirective is given at most once. Settings
// left out come from the caracal global option, then from the process's caracal_sts
// app (revocation), then from the defaults; Validate checks the result.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.Errf("caracal_mandate takes no arguments besides a matcher, got %q", d.Val())
	}
	seen := caddyfileopts.NewSeen("caracal_mandate", "scopes")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.Add(d); err != nil {
			return err
		}
		var err error
		switch d.Val() {
		case "issuer":
			err = caddyfileopts.String(d, &h.Issuer)
		case "resource":
			err = caddyfileopts.String(d, &h.Resource)
		case "scopes":
			name := d.Val()
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return caddyfileopts.Empty(d, name)
			}
			h.Scopes = append(h.Scopes, scopes...)
		case "revocation":
			err = h.Revocation.UnmarshalCaddyfile(d)
		case "max_staleness":
			err = caddyfileopts.Duration(d, &h.MaxStaleness)
		case "leeway":
			err = caddyfileopts.Duration(d, &h.Leeway)
		case "on_stale":
			err = caddyfileopts.String(d, &h.OnStale)
		case "check_bytes":
			err = caddyfileopts.Int(d, &h.CheckBytes)
		case "forward_mandate":
			err = caddyfileopts.OnOff(d, &h.ForwardMandate)
		case "end_on_expiry":
			err = caddyfileopts.OnOff(d, &h.EndOnExpiry)
		case "reject_stale_epoch":
			err = caddyfileopts.NoArgs(d)
			h.RejectStaleEpoch = true
		case "tls_trust_pool":
			err = h.unmarshalTrustPool(d)
		case "jwks_file":
			err = caddyfileopts.String(d, &h.JWKSFile)
		case "exchange":
			h.Exchange = new(ExchangeConfig)
			err = h.Exchange.unmarshalCaddyfile(d)
		default:
			return seen.Unknown(d)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalTrustPool reads `tls_trust_pool <module> [<args...>] [{ ... }]`, a module of
// the tls.ca_pool.source namespace with its own Caddyfile syntax, as reverse_proxy does.
func (h *Handler) unmarshalTrustPool(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Err("tls_trust_pool needs a tls.ca_pool.source module: file, inline, pki_root, ...")
	}
	modStem := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, "tls.ca_pool.source."+modStem)
	if err != nil {
		return err
	}
	ca, ok := unm.(caddytls.CA)
	if !ok {
		return d.Errf("module tls.ca_pool.source.%s is not a certificate pool", modStem)
	}
	h.TrustPoolRaw = caddyconfig.JSONModuleObject(ca, "provider", modStem, nil)
	return nil
}

// unmarshalCaddyfile reads `exchange [<token endpoint>] { renew_before <duration> }`.
func (c *ExchangeConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		c.TokenEndpoint = d.Val()
		if d.NextArg() {
			return d.Errf("exchange takes one token endpoint, got another: %q", d.Val())
		}
	}
	seen := caddyfileopts.NewSeen("exchange")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := seen.Add(d); err != nil {
			return err
		}
		switch d.Val() {
		case "renew_before":
			if err := caddyfileopts.Duration(d, &c.RenewBefore); err != nil {
				return err
			}
		default:
			return seen.Unknown(d)
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*DemoUpstream)(nil)
)
