// Command caracal is Caddy with Caddy's standard modules and the Caracal modules.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules and Caracal's.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/caracalgw/caracal"
)

func main() {
	caddycmd.Main()
}
