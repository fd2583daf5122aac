// Package caddystore opens Caracal's storage for the Caddy apps and shares one store per
// configuration across apps and config reloads. Caddy starts a new config before it stops
// the old one, so a pool keyed by the storage configuration lets both see the same
// PostgreSQL pool (or the same in-memory store) instead of opening a second one.
package caddystore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/store/postgres"
)

// Config selects the storage. The zero value is the in-memory store.
type Config struct {
	// Driver is "memory" (default) or "postgres".
	Driver string `json:"driver,omitempty"`
	// DSN is the PostgreSQL connection string (postgres driver only). Placeholders such as
	// {env.CARACAL_DATABASE_URL} are expanded at provision time.
	DSN string `json:"dsn,omitempty"`
}

var pool = caddy.NewUsagePool()

type pooled struct{ store.Store }

// Destruct closes the store once the last app using it is cleaned up.
func (p pooled) Destruct() error { return p.Close() }

// Handle is a reference to a shared store; Release it in the app's Cleanup.
type Handle struct {
	store.Store
	key string
}

// Release drops this reference; the store closes when no reference remains.
func (h *Handle) Release() error {
	if h == nil || h.key == "" {
		return nil
	}
	_, err := pool.Delete(h.key)
	h.key = ""
	return err
}

// Open returns a shared store for cfg, opening it (and applying migrations) on first use.
func Open(ctx context.Context, cfg Config) (*Handle, error) {
	repl := caddy.NewReplacer()
	driver := cfg.Driver
	if driver == "" {
		driver = "memory"
	}
	var key string
	var construct caddy.Constructor
	switch driver {
	case "memory":
		if cfg.DSN != "" {
			return nil, errors.New("storage: the memory driver takes no dsn")
		}
		key = "memory"
		construct = func() (caddy.Destructor, error) { return pooled{memory.New()}, nil }
	case "postgres":
		dsn, err := repl.ReplaceOrErr(cfg.DSN, true, true)
		if err != nil {
			return nil, fmt.Errorf("storage: expanding dsn: %w", err)
		}
		if strings.TrimSpace(dsn) == "" {
			return nil, errors.New("storage: the postgres driver needs a dsn")
		}
		key = "postgres:" + dsn
		construct = func() (caddy.Destructor, error) {
			st, err := postgres.Open(ctx, dsn)
			if err != nil {
				return nil, fmt.Errorf("storage: opening postgres: %w", err)
			}
			return pooled{st}, nil
		}
	default:
		return nil, fmt.Errorf("storage: unknown driver %q (want memory or postgres)", driver)
	}
	val, _, err := pool.LoadOrNew(key, construct)
	if err != nil {
		return nil, err
	}
	return &Handle{Store: val.(pooled).Store, key: key}, nil
}

// UnmarshalCaddyfile parses `storage memory` or `storage postgres <dsn>`; the dispenser
// is positioned on the `storage` token.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	c.Driver = d.Val()
	switch c.Driver {
	case "memory":
	case "postgres":
		if !d.NextArg() {
			return d.Errf("storage postgres needs a dsn")
		}
		c.DSN = d.Val()
	default:
		return d.Errf("unknown storage driver %q (want memory or postgres)", c.Driver)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}
