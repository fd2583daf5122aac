// Command caracal is Caddy with Caddy's standard modules and the Caracal modules.
package main

import (
	"os"
	"runtime/debug"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules and Caracal's.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/caracalgw/caracal"
)

// gcPercent is the collector setting caracal runs with unless GOGC is set: the token
// endpoint and the gateway allocate per request over a small live heap, and at Go's
// default of 100 the collector runs hundreds of times a second under load and sets the
// tail latency (README, Performance). 400 trades a few megabytes of heap for that.
const gcPercent = 400

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	caddycmd.Main()
}
