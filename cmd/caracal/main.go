// Command caracal is Caddy with Caddy's standard modules and the Caracal modules.
package main

import (
	"os"
	"runtime/debug"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules and Caracal's.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/caracalgw/caracal"
)

// gcPercent is the collector setting caracal runs with unless GOGC is set: the token
// endpoint and the gateway allocate per request over a small live heap, and at Go's
// default of 100 the collector runs hundreds of times a second under load and sets the
// tail latency (docs/performance.md). 400 trades a few megabytes of heap for that.
const gcPercent = 400

// version and commit name this build of Caracal. `make build` sets them from xcaddy.json
// and git (`go run ./scripts/manifest ldflags`):
//
//	-ldflags '-X main.version=v0.1.0 -X main.commit=0123456789ab'
var (
	version string
	commit  string
)

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	bi, _ := debug.ReadBuildInfo()
	// Caddy prints CustomVersion before its own version in `caracal version`.
	caddy.CustomVersion = caracalVersion(version, commit, bi)
	caddycmd.Main()
}

// caracalVersion is "Caracal <version> (commit <commit>) on Caddy". A build without
// -ldflags is version "devel", and its commit comes from the Go toolchain's VCS stamp
// (with "+modified" for a dirty tree) or is "unknown".
func caracalVersion(version, commit string, bi *debug.BuildInfo) string {
	if version == "" {
		version = "devel"
	}
	if commit == "" && bi != nil {
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if len(commit) > 12 {
			commit = commit[:12]
		}
		if commit != "" && modified {
			commit += "+modified"
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return "Caracal " + version + " (commit " + commit + ") on Caddy"
}
