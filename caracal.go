// Package caracal is the Caracal authority gateway for AI agents, as Caddy modules.
// Importing it registers every Caracal module, so that
//
//	xcaddy build v2.11.9 --with github.com/caracalgw/caracal@v0.0.0-00010101000000-000000000000=.
//
// builds a Caddy with the STS, the Coordinator and the gateway handler (`make xcaddy`;
// the placeholder version keeps go get from asking the module proxy for the local module).
package caracal

import (
	// Caracal's Caddy modules register themselves in init.
	_ "github.com/caracalgw/caracal/caddymodules"
	_ "github.com/caracalgw/caracal/coordinator"
	_ "github.com/caracalgw/caracal/sts"
)
