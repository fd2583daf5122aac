// Package caddystore gives the Caracal Caddy apps one storage runtime per storage
// configuration: the store, its migrations, the outbox relay that publishes the
// store's outbox to the revocation streams, and the retention purge. The caracal_sts
// and caracal_coordinator apps of a configuration share it, and so do successive
// configurations: Caddy provisions and starts a new config before it stops the old one,
// and a caddy.UsagePool keyed by the storage configuration lets both use one PostgreSQL
// pool (or the one in-memory store) and one relay.
//
// The lifecycle follows Caddy's (docs/configuration-lifecycle.md): Open, in Provision,
// connects and checks the schema without writing; Start migrates and runs the apps'
// start-up writes under the storage-wide lock; until the first Start has migrated, every
// store call waits (or fails with store.ErrUnavailable when its context ends).
package caddystore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/internal/store/memory"
	"github.com/caracalgw/caracal/internal/store/postgres"
)

// Bounds of the waits the runtime makes.
const (
	// ConnectTimeout bounds Open's wait for PostgreSQL, so that a configuration naming an
	// unreachable database fails to provision (and `caracal validate` ends) instead of
	// hanging.
	ConnectTimeout = 15 * time.Second
	// StartTimeout bounds Start: the wait for the storage-wide lock (another process
	// may be migrating), the migrations and the start-up writes.
	StartTimeout = time.Minute
)

// Config selects the storage. The zero value is the in-memory store.
type Config struct {
	// Driver is "memory" (default) or "postgres".
	Driver string `json:"driver,omitempty"`
	// DSN is the PostgreSQL connection string (postgres driver only). Placeholders such as
	// {env.CARACAL_DATABASE_URL} are expanded at provision time.
	DSN string `json:"dsn,omitempty"`
}

// resolve expands placeholders and returns the driver, the expanded dsn and the pool
// key of the configuration.
func (c Config) resolve() (driver, dsn, key string, err error) {
	driver = c.Driver
	if driver == "" {
		driver = "memory"
	}
	switch driver {
	case "memory":
		if c.DSN != "" {
			return "", "", "", errors.New("storage: the memory driver takes no dsn")
		}
		return driver, "", "memory", nil
	case "postgres":
		dsn, err = caddy.NewReplacer().ReplaceOrErr(c.DSN, true, true)
		if err != nil {
			return "", "", "", fmt.Errorf("storage: expanding dsn: %w", err)
		}
		if strings.TrimSpace(dsn) == "" {
			return "", "", "", errors.New("storage: the postgres driver needs a dsn")
		}
		return driver, dsn, "postgres:" + dsn, nil
	default:
		return "", "", "", fmt.Errorf("storage: unknown driver %q (want memory or postgres)", driver)
	}
}

// Same reports whether c and other select the same storage once placeholders are
// expanded.
func (c Config) Same(other Config) (bool, error) {
	_, _, k1, err := c.resolve()
	if err != nil {
		return false, err
	}
	_, _, k2, err := other.resolve()
	if err != nil {
		return false, err
	}
	return k1 == k2, nil
}

// backend is a store that can be set up: migrations, then start-up writes, under a lock
// that spans every process using the storage.
type backend interface {
	store.Store
	Setup(ctx context.Context, fn func(context.Context) error) error
}

// memoryBackend is the in-memory store; its lock spans the process, which is all that
// can share it.
type memoryBackend struct {
	*memory.Store
	mu *sync.Mutex
}

func (m memoryBackend) Setup(ctx context.Context, fn func(context.Context) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn(ctx)
}

var pool = caddy.NewUsagePool()

// shared is the pooled runtime of one storage configuration.
type shared struct {
	backend backend
	gated   *gated
	ready   chan struct{}
	closed  chan struct{}
	migrate sync.Once

	mu     sync.Mutex
	relays relaySet
}

// Destruct stops what still runs and closes the store once the last app using it is
// cleaned up.
func (sh *shared) Destruct() error {
	close(sh.closed)
	sh.relays.stopAll(&sh.mu)
	return sh.backend.Close()
}

// Runtime is one app's reference to the shared storage runtime of its configuration;
// Release it in the app's Cleanup.
type Runtime struct {
	sh  *shared
	key string
	run *relayRun // the relay this reference started, until StopRelay
}

// Open returns the runtime of cfg, connecting on first use. With PostgreSQL it waits
// at most ConnectTimeout for the server and checks, without writing, that the schema
// is one this build knows; migrations wait for Start.
func Open(cfg Config) (*Runtime, error) {
	driver, dsn, key, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	val, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		var b backend
		switch driver {
		case "memory":
			b = memoryBackend{Store: memory.New(), mu: new(sync.Mutex)}
		default:
			ctx, cancel := context.WithTimeout(context.Background(), ConnectTimeout)
			defer cancel()
			st, err := postgres.Connect(ctx, dsn)
			if err != nil {
				if errors.Is(err, store.ErrUnavailable) {
					return nil, fmt.Errorf("storage: PostgreSQL at %s is unreachable (waited at most %s): %w", describe(dsn), ConnectTimeout, err)
				}
				return nil, fmt.Errorf("storage: PostgreSQL at %s: %w", describe(dsn), err)
			}
			b = st
		}
		sh := &shared{backend: b, ready: make(chan struct{}), closed: make(chan struct{})}
		sh.gated = &gated{inner: b, ready: sh.ready, closed: sh.closed}
		return sh, nil
	})
	if err != nil {
		return nil, err
	}
	return &Runtime{sh: val.(*shared), key: key}, nil
}

// describe names the server and database of dsn for error messages, without the
// password.
func describe(dsn string) string {
	c, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "the configured dsn"
	}
	return fmt.Sprintf("%s:%d (database %q, user %q)", c.Host, c.Port, c.Database, c.User)
}

// Store is the shared store. Its calls wait until the first Start of the runtime has
// migrated it.
func (r *Runtime) Store() store.Store { return r.sh.gated }

// Start sets the storage up under the storage-wide lock (a PostgreSQL advisory lock):
// it applies pending migrations, runs setup (when not nil), the app's start-up writes,
// then opens the store to every module of the process. It waits at most StartTimeout.
func (r *Runtime) Start(setup func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	err := r.sh.backend.Setup(ctx, func(ctx context.Context) error {
		if setup != nil {
			// The declared zones are written before any request can use the store, so a
			// first request never meets a migrated store without its applications.
			if err := setup(context.WithValue(ctx, setupKey{}, true)); err != nil {
				return err
			}
		}
		r.sh.migrate.Do(func() { close(r.sh.ready) })
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// Release drops this reference, stopping its relay if it still runs; the store closes
// when no reference remains. It is safe on a nil Runtime.
func (r *Runtime) Release() error {
	if r == nil || r.key == "" {
		return nil
	}
	r.StopRelay()
	_, err := pool.Delete(r.key)
	r.key = ""
	return err
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
