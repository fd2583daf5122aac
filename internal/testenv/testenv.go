// Package testenv connects integration tests to the PostgreSQL and Redis servers of
// the development machine (`make services` starts them) and gives each test package a
// database of its own, so packages can run at the same time against shared servers.
//
// Tests never skip when a server is missing: they fail and say how to start it.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/argon2"
)

// Defaults match what `make services` starts.
const (
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// stderr receives Main's diagnostics; a variable so the package's tests can read them.
var stderr io.Writer = os.Stderr

// DatabaseURL returns the administrative PostgreSQL URL: CARACAL_TEST_DATABASE_URL, or
// DefaultDatabaseURL. Tests create their own databases through it.
func DatabaseURL() string {
	if v := os.Getenv("CARACAL_TEST_DATABASE_URL"); v != "" {
		return v
	}
	return DefaultDatabaseURL
}

// RedisURL returns CARACAL_TEST_REDIS_URL, or DefaultRedisURL.
func RedisURL() string {
	if v := os.Getenv("CARACAL_TEST_REDIS_URL"); v != "" {
		return v
	}
	return DefaultRedisURL
}

// CreateDatabase creates an empty database named after prefix plus a random suffix and
// returns its connection string and a function that drops it, closing any connection
// still open to it.
func CreateDatabase(ctx context.Context, prefix string) (dsn string, drop func(), err error) {
	admin := DatabaseURL()
	name, err := databaseName(prefix)
	if err != nil {
		return "", nil, err
	}
	dsn, err = withDatabase(admin, name)
	if err != nil {
		return "", nil, err
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("connecting to PostgreSQL at %s: %w (start it with `make services`, or set CARACAL_TEST_DATABASE_URL)", describe(admin), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", nil, fmt.Errorf("creating test database %s: %w", name, err)
	}
	drop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			fmt.Fprintf(stderr, "testenv: dropping test database %s: %v\n", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(stderr, "testenv: dropping test database %s: %v\n", name, err)
		}
	}
	return dsn, drop, nil
}

// databaseName turns prefix into a safe identifier and adds a random suffix, keeping
// within PostgreSQL's 63-byte identifier limit.
func databaseName(prefix string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(prefix) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	base := b.String()
	if base == "" {
		base = "test"
	}
	base = base[:min(len(base), 40)]
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", fmt.Errorf("naming test database: %w", err)
	}
	return "caracal_" + base + "_" + hex.EncodeToString(suffix[:]), nil
}

// withDatabase points a connection string, URL or keyword/value form, at database name.
func withDatabase(dsn, name string) (string, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " dbname=" + name, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("parsing CARACAL_TEST_DATABASE_URL: %w", err)
	}
	u.Path = "/" + name
	q := u.Query()
	q.Del("dbname")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// describe names a server without leaking a password from the connection string.
func describe(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Host != "" {
		return u.Redacted()
	}
	return "CARACAL_TEST_DATABASE_URL"
}

// RequireRedis fails the test unless Redis answers PING at RedisURL, and returns that URL.
func RequireRedis(tb testing.TB) string {
	tb.Helper()
	raw := RedisURL()
	opts, err := redis.ParseURL(raw)
	if err != nil {
		tb.Fatalf("testenv: parsing CARACAL_TEST_REDIS_URL: %v", err)
	}
	client := redis.NewClient(opts)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		tb.Fatalf("testenv: Redis at %s does not answer: %v (start it with `make services`, or set CARACAL_TEST_REDIS_URL)", opts.Addr, err)
	}
	return raw
}

// Main runs a test package against a database of its own, for use in TestMain:
//
//	var dsn string
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m, "sts", &dsn)) }
//
// It creates the database, stores its connection string in *dsn, runs the tests and
// drops the database. When PostgreSQL cannot be reached it prints how to start it and
// returns 1 without running any test.
func Main(m *testing.M, prefix string, dsn *string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	created, drop, err := CreateDatabase(ctx, prefix)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "testenv: %v\n", err)
		return 1
	}
	defer drop()
	*dsn = created
	return m.Run()
}

// Clock is a settable clock for tests, safe for concurrent use. Its timers (AfterFunc)
// fire when Advance moves the clock past their deadline, never on their own.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*clockTimer
}

// clockTimer is one pending AfterFunc of a Clock.
type clockTimer struct {
	when time.Time
	f    func()
}

// NewClock returns a clock that reads t until moved.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d, then runs, on the calling goroutine and in the
// order of their deadlines, the timers that are due, including those a due timer
// starts.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		next := -1
		for i, t := range c.timers {
			if !t.when.After(c.now) && (next < 0 || t.when.Before(c.timers[next].when)) {
				next = i
			}
		}
		if next < 0 {
			c.mu.Unlock()
			return
		}
		t := c.timers[next]
		c.timers = append(c.timers[:next], c.timers[next+1:]...)
		c.mu.Unlock()
		t.f()
	}
}

// AfterFunc calls f once the clock has been advanced by d (at the next Advance when d
// is not positive). stop cancels the call and reports whether it was still pending.
func (c *Clock) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &clockTimer{when: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, p := range c.timers {
			if p == t {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return true
			}
		}
		return false
	}
}

// Timers is the number of pending timers.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// CheapSecretHash is an Argon2id PHC string of secret with small parameters, so that
// race-enabled suites do not pay 64 MiB per hash; verification reads the parameters from
// the string, so it checks exactly like a production hash.
func CheapSecretHash(secret string) string {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	key := argon2.IDKey([]byte(secret), salt, 1, 64, 1, 32)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$%s$%s", enc.EncodeToString(salt), enc.EncodeToString(key))
}
