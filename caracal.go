// Package caracal is the Caracal authority gateway for AI agents, as Caddy modules.
// Importing it registers every Caracal module, so that
//
//	xcaddy build --with github.com/caracalgw/caracal=.
//
// builds a Caddy with the STS, the Coordinator and the gateway handler.
package caracal

import (
	// Caracal's Caddy modules register themselves in init.
	_ "github.com/caracalgw/caracal/caddymodules"
	_ "github.com/caracalgw/caracal/coordinator"
	_ "github.com/caracalgw/caracal/sts"
)
