// Package harden checks a Caracal configuration against the production hardening
// checklist (docs/hardening.md). It reads the adapted JSON configuration only: it never
// provisions a module, opens a connection or writes anything, so it can run on any
// machine that holds the configuration file.
package harden

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Level is the outcome of one check item.
type Level int

// Levels, from best to worst.
const (
	Pass Level = iota
	Warn
	Fail
)

func (l Level) String() string {
	switch l {
	case Pass:
		return "PASS"
	case Warn:
		return "WARN"
	default:
		return "FAIL"
	}
}

// Finding is one result of one check.
type Finding struct {
	// Check is the check's identifier, e.g. "demo-secrets".
	Check string
	Level Level
	// Where names the configuration field, e.g. "caracal_coordinator.bootstrap_token".
	Where string
	// Message says what is wrong (or, for a pass, what was checked). It never contains
	// a secret value.
	Message string
	// Fix says what to change; empty for a pass.
	Fix string
}

// Options are the inputs of Run besides the JSON configuration.
type Options struct {
	// Caddyfile is the configuration's Caddyfile text when it was adapted from one. The
	// Caddyfile adapter substitutes {$VAR} while adapting, so only the text shows that a
	// secret came from one.
	Caddyfile []byte
	// Filename names the Caddyfile in findings.
	Filename string
	// Resolve expands runtime placeholders ({env.*}, {file.*}) the way the running
	// process would, so that a token's length or a DSN's host can be checked. Nil leaves
	// placeholders unexpanded; checks that need the value then warn that they could not
	// see it.
	Resolve func(string) string
}

// config is the decoded JSON configuration with the options.
type config struct {
	root map[string]any
	opts Options
}

type check struct {
	id string
	// pass describes what a passing configuration satisfies.
	pass string
	run  func(*config) []Finding
}

// checks is the checklist, in the order it is printed.
var checks = []check{
	{"demo-secrets", "no demo secret or bootstrap token shorter than 32 characters", checkDemoSecrets},
	{"literal-secrets", "secrets come from {env.*} or {file.*} placeholders", checkLiteralSecrets},
	{"storage", "persistent storage shared by every process", checkStorage},
	{"stream-key", "every Redis revocation stream is signed (stream_key)", checkStreamKey},
	{"transport-tls", "Redis, PostgreSQL, OPA and the STS are reached over TLS or on loopback", checkTransportTLS},
	{"on-stale", "gateways deny when revocation state is stale", checkOnStale},
	{"lifetimes", "session lifetime at most 24h, mandate lifetime at most 15m", checkLifetimes},
	{"check-bytes", "streamed responses re-check revocation at least every 64 KiB", checkCheckBytes},
	{"admin-endpoint", "Caddy's admin endpoint listens on loopback or a unix socket, or is disabled", checkAdmin},
	{"mandate-tls", "every site with caracal_mandate serves TLS", checkMandateTLS},
	{"demo-modules", "no demo module (caracal_demo_upstream)", checkDemoModules},
}

// Check runs every check over the JSON configuration cfg. Each check yields its
// findings, or one Pass finding when it found nothing.
func Check(cfg []byte, opts Options) ([]Finding, error) {
	var root map[string]any
	if err := json.Unmarshal(cfg, &root); err != nil {
		return nil, fmt.Errorf("harden: decoding the JSON configuration: %w", err)
	}
	if root == nil {
		root = map[string]any{}
	}
	c := &config{root: root, opts: opts}
	var out []Finding
	for _, ch := range checks {
		fs := ch.run(c)
		if len(fs) == 0 {
			fs = []Finding{{Level: Pass, Message: ch.pass}}
		}
		for i := range fs {
			fs[i].Check = ch.id
		}
		out = append(out, fs...)
	}
	return out, nil
}

// Failed counts the failing findings.
func Failed(fs []Finding) int {
	n := 0
	for _, f := range fs {
		if f.Level == Fail {
			n++
		}
	}
	return n
}

// Print writes one line per finding, with its fix on the next line.
func Print(w io.Writer, fs []Finding) error {
	for _, f := range fs {
		line := fmt.Sprintf("%s  %-15s  ", f.Level, f.Check)
		if f.Where != "" {
			line += f.Where + ": "
		}
		if _, err := fmt.Fprintln(w, line+f.Message); err != nil {
			return err
		}
		if f.Fix != "" {
			if _, err := fmt.Fprintf(w, "      %-15s  fix: %s\n", "", f.Fix); err != nil {
				return err
			}
		}
	}
	return nil
}

// runtimePlaceholder matches a value that is exactly one placeholder the process expands
// when it provisions, so that the secret is not in the configuration itself.
var runtimePlaceholder = regexp.MustCompile(`^\{(env|file)\.[^{}]+\}$`)

// resolve expands runtime placeholders; ok is false when a placeholder is left.
func (c *config) resolve(v string) (string, bool) {
	if c.opts.Resolve != nil && strings.Contains(v, "{") {
		v = c.opts.Resolve(v)
	}
	return v, !strings.Contains(v, "{env.") && !strings.Contains(v, "{file.")
}
