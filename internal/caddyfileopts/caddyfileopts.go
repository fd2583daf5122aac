// Package caddyfileopts holds the small rules every Caracal Caddyfile block follows: a
// subdirective appears once unless it is a list, an unknown one is refused, and a value
// that a {$VAR} placeholder left empty is called empty rather than a wrong argument
// count. Every error names the file and line, as the dispenser's own errors do.
package caddyfileopts

import (
	"encoding/json"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// MergeGlobal fills app with what earlier blocks of the same global option set (Caddy
// hands their result to the option's parser as existingVal), so that repeated blocks
// merge into one app.
func MergeGlobal(existingVal, app any) error {
	if existing, ok := existingVal.(httpcaddyfile.App); ok {
		return json.Unmarshal(existing.Value, app)
	}
	return nil
}

// Seen tracks the subdirectives of one block, so that a repeated one is refused.
type Seen struct {
	block      string
	repeatable map[string]bool
	lines      map[string]seenAt
}

type seenAt struct {
	file string
	line int
}

// NewSeen starts tracking a block called block (used in messages); the names in
// repeatable may appear any number of times (lists such as scopes or zones).
func NewSeen(block string, repeatable ...string) *Seen {
	s := &Seen{block: block, repeatable: map[string]bool{}, lines: map[string]seenAt{}}
	for _, n := range repeatable {
		s.repeatable[n] = true
	}
	return s
}

// Add records the subdirective the dispenser is on and refuses it if it was given
// before in this block.
func (s *Seen) Add(d *caddyfile.Dispenser) error {
	return s.AddName(d, d.Val())
}

// AddName records name for the token the dispenser is on: the same rule as Add for a
// setting that is not spelled as the current token (a key of a one-line key/value list).
func (s *Seen) AddName(d *caddyfile.Dispenser, name string) error {
	if s.repeatable[name] {
		return nil
	}
	if first, ok := s.lines[name]; ok {
		return d.Errf("%s: %s is given twice (first at %s:%d)", s.block, name, first.file, first.line)
	}
	s.lines[name] = seenAt{file: d.File(), line: d.Line()}
	return nil
}

// Unknown refuses the subdirective the dispenser is on.
func (s *Seen) Unknown(d *caddyfile.Dispenser) error {
	return d.Errf("%s: unknown subdirective %q", s.block, d.Val())
}

// String reads the one value of the subdirective the dispenser is on.
func String(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	if !d.NextArg() {
		return Empty(d, name)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s takes one value, got another: %q", name, d.Val())
	}
	return nil
}

// Empty is the error for a subdirective given without its value. In a Caddyfile that
// is most often a {$VAR} whose environment variable is unset or empty: the adapter
// substitutes those before it splits lines into tokens, so the value vanishes.
func Empty(d *caddyfile.Dispenser, name string) error {
	return d.Errf("%s: the value is empty (an unset or empty environment variable in {$VAR} leaves nothing; {env.VAR} is read at run time instead)", name)
}

// NoArgs refuses any value after the subdirective the dispenser is on (a flag).
func NoArgs(d *caddyfile.Dispenser) error {
	name := d.Val()
	if d.NextArg() {
		return d.Errf("%s takes no value, got %q", name, d.Val())
	}
	return nil
}

// Duration reads a Caddy duration (1m30s, 2d, ...).
func Duration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	var s string
	if err := String(d, &s); err != nil {
		return err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %v", name, err)
	}
	*dst = caddy.Duration(v)
	return nil
}

// Int reads a decimal integer.
func Int(d *caddyfile.Dispenser, dst *int) error {
	name := d.Val()
	var s string
	if err := String(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return d.Errf("%s takes an integer, got %q", name, s)
	}
	*dst = n
	return nil
}

// OnOff reads on or off into a pointer, so that an unset value stays nil (the default).
func OnOff(d *caddyfile.Dispenser, dst **bool) error {
	name := d.Val()
	var s string
	if err := String(d, &s); err != nil {
		return err
	}
	var on bool
	switch s {
	case "on":
		on = true
	case "off":
	default:
		return d.Errf("%s must be on or off, not %q", name, s)
	}
	*dst = &on
	return nil
}
