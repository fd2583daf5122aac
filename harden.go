package caracal

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caracalgw/caracal/internal/harden"
)

func init() {
	fs := flag.NewFlagSet("harden", flag.ExitOnError)
	fs.String("config", "", "Configuration file (default ./Caddyfile)")
	fs.String("adapter", "", "Name of the config adapter (caddyfile is inferred from the file name)")
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "harden",
		Usage: "[--config <path>] [--adapter <name>] [<path>]",
		Short: "Checks a configuration against Caracal's production hardening checklist",
		Long: `
Adapts the configuration to JSON and checks it against the checklist of
docs/hardening.md, without provisioning any module or connecting anywhere.
Each item prints as PASS, WARN or FAIL with its fix; the exit status is 1
when an item fails. {env.*} and {file.*} placeholders are expanded from this
process's environment and files where that is needed to judge a value (a
token's length, a database host); secret values are never printed.
`,
		Flags: fs,
		Func:  cmdHarden,
	})
}

func cmdHarden(fl caddycmd.Flags) (int, error) {
	file := fl.String("config")
	if arg := fl.Arg(0); arg != "" {
		if file != "" || fl.NArg() > 1 {
			return caddy.ExitCodeFailedStartup, errors.New("harden takes one configuration: --config <path> or <path>")
		}
		file = arg
	}
	fs, err := hardenFile(file, fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if err := harden.Print(os.Stdout, fs); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if n := harden.Failed(fs); n > 0 {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("%d hardening item(s) failed: this configuration is not ready for production", n)
	}
	return caddy.ExitCodeSuccess, nil
}

// hardenFile adapts a configuration file (as `caddy adapt` would) and checks it.
func hardenFile(file, adapter string) ([]harden.Finding, error) {
	cfg, file, adapter, err := caddycmd.LoadConfig(file, adapter)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errors.New("harden: no configuration (use --config <path>)")
	}
	opts := harden.Options{Resolve: harden.ResolveFromEnvironment}
	if adapter == "caddyfile" && file != "-" {
		if opts.Caddyfile, err = os.ReadFile(file); err != nil {
			return nil, err
		}
		opts.Filename = file
	}
	return harden.Check(cfg, opts)
}
