package caddymodules

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("caracal_mandate", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("caracal_mandate", httpcaddyfile.Before, "basic_auth")
}

// parseCaddyfile parses the following. Without a revocation line the handler uses
// the transport and key of the process's caracal_sts app, and local without one.
//
//	caracal_mandate [<matcher>] {
//		issuer           <zone issuer URL>
//		resource         <identifier>
//		scopes           <scope...>
//		revocation       local | <redis URL> {
//			stream_key    <secret>
//			stream_prefix <prefix>
//			retention     <duration>
//		}
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
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	h.Next()
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "issuer":
			if !h.AllArgs(&m.Issuer) {
				return nil, h.ArgErr()
			}
		case "resource":
			if !h.AllArgs(&m.Resource) {
				return nil, h.ArgErr()
			}
		case "scopes":
			m.Scopes = append(m.Scopes, h.RemainingArgs()...)
			if len(m.Scopes) == 0 {
				return nil, h.ArgErr()
			}
		case "revocation":
			if err := m.Revocation.UnmarshalCaddyfile(h.Dispenser); err != nil {
				return nil, err
			}
		case "max_staleness", "leeway":
			name := h.Val()
			var s string
			if !h.AllArgs(&s) {
				return nil, h.ArgErr()
			}
			d, err := caddy.ParseDuration(s)
			if err != nil {
				return nil, h.Errf("%s: %v", name, err)
			}
			if name == "leeway" {
				m.Leeway = caddy.Duration(d)
			} else {
				m.MaxStaleness = caddy.Duration(d)
			}
		case "on_stale":
			if !h.AllArgs(&m.OnStale) {
				return nil, h.ArgErr()
			}
			if m.OnStale != "deny" && m.OnStale != "allow" {
				return nil, h.Errf("on_stale must be deny or allow")
			}
		case "check_bytes":
			var s string
			if !h.AllArgs(&s) {
				return nil, h.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, h.Errf("check_bytes: %v", err)
			}
			m.CheckBytes = n
		case "forward_mandate", "end_on_expiry":
			name := h.Val()
			var s string
			if !h.AllArgs(&s) {
				return nil, h.ArgErr()
			}
			var on bool
			switch s {
			case "on":
				on = true
			case "off":
			default:
				return nil, h.Errf("%s must be on or off", name)
			}
			if name == "forward_mandate" {
				m.ForwardMandate = &on
			} else {
				m.EndOnExpiry = &on
			}
		case "reject_stale_epoch":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			m.RejectStaleEpoch = true
		case "tls_trust_pool":
			if !h.NextArg() {
				return nil, h.ArgErr()
			}
			modStem := h.Val()
			unm, err := caddyfile.UnmarshalModule(h.Dispenser, "tls.ca_pool.source."+modStem)
			if err != nil {
				return nil, err
			}
			ca, ok := unm.(caddytls.CA)
			if !ok {
				return nil, h.Errf("module tls.ca_pool.source.%s is not a certificate pool", modStem)
			}
			if m.TrustPoolRaw != nil {
				return nil, h.Err("tls_trust_pool is given twice")
			}
			m.TrustPoolRaw = caddyconfig.JSONModuleObject(ca, "provider", modStem, nil)
		case "jwks_file":
			if !h.AllArgs(&m.JWKSFile) {
				return nil, h.ArgErr()
			}
		case "exchange":
			m.Exchange = new(ExchangeConfig)
			if h.NextArg() {
				m.Exchange.TokenEndpoint = h.Val()
				if h.NextArg() {
					return nil, h.ArgErr()
				}
			}
			for nesting := h.Nesting(); h.NextBlock(nesting); {
				switch h.Val() {
				case "renew_before":
					var s string
					if !h.AllArgs(&s) {
						return nil, h.ArgErr()
					}
					d, err := caddy.ParseDuration(s)
					if err != nil {
						return nil, h.Errf("renew_before: %v", err)
					}
					m.Exchange.RenewBefore = caddy.Duration(d)
				default:
					return nil, h.Errf("unrecognized exchange option %q", h.Val())
				}
			}
		default:
			return nil, h.Errf("unrecognized caracal_mandate option %q", h.Val())
		}
	}
	if m.Issuer == "" || m.Resource == "" {
		return nil, h.Err("caracal_mandate needs issuer and resource")
	}
	return m, nil
}
