package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// dsn is this package's own database, created by Main.
var dsn string

func TestMain(m *testing.M) {
	os.Exit(Main(m, "testenv", &dsn))
}

// unreachable is a URL nothing listens on (port 1 is reserved and closed here).
const unreachable = "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2"

func TestURLsComeFromTheEnvironmentWithDefaults(t *testing.T) {
	t.Setenv("CARACAL_TEST_DATABASE_URL", "")
	t.Setenv("CARACAL_TEST_REDIS_URL", "")
	if got := DatabaseURL(); got != DefaultDatabaseURL {
		t.Errorf("DatabaseURL() = %q, want the default %q", got, DefaultDatabaseURL)
	}
	if got := RedisURL(); got != DefaultRedisURL {
		t.Errorf("RedisURL() = %q, want the default %q", got, DefaultRedisURL)
	}
	t.Setenv("CARACAL_TEST_DATABASE_URL", "postgres://u@db.example:5433/x")
	t.Setenv("CARACAL_TEST_REDIS_URL", "redis://cache.example:6380/2")
	if got := DatabaseURL(); got != "postgres://u@db.example:5433/x" {
		t.Errorf("DatabaseURL() = %q, want the environment's value", got)
	}
	if got := RedisURL(); got != "redis://cache.example:6380/2" {
		t.Errorf("RedisURL() = %q, want the environment's value", got)
	}
}

func TestMainGaveThePackageItsOwnDatabase(t *testing.T) {
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connecting to the package database: %v", err)
	}
	defer conn.Close(t.Context())
	var name string
	if err := conn.QueryRow(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "caracal_testenv_") {
		t.Errorf("package database is %q, want a name starting with caracal_testenv_", name)
	}
}

func TestCreateDatabaseMakesDistinctDatabasesAndDropRemovesThem(t *testing.T) {
	ctx := t.Context()
	first, dropFirst, err := CreateDatabase(ctx, "Create Test!")
	if err != nil {
		t.Fatal(err)
	}
	second, dropSecond, err := CreateDatabase(ctx, "Create Test!")
	if err != nil {
		dropFirst()
		t.Fatal(err)
	}
	defer dropSecond()
	if first == second {
		t.Fatalf("two CreateDatabase calls returned the same dsn %q", first)
	}

	// An open connection must not stop the drop (WITH (FORCE)).
	conn, err := pgx.Connect(ctx, first)
	if err != nil {
		t.Fatalf("connecting to the created database: %v", err)
	}
	var name string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(name, "caracal_create_test__") {
		t.Errorf("database name %q does not carry the sanitised prefix", name)
	}
	dropFirst()

	admin, err := pgx.Connect(ctx, DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after drop", name)
	}
}

func TestWithDatabaseRewritesBothConnectionStringForms(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"a url gets the database as its path", "postgres://u:p@h:5432/postgres?sslmode=disable", "postgres://u:p@h:5432/db1?sslmode=disable"},
		{"a url loses a conflicting dbname parameter", "postgresql://h/x?dbname=postgres", "postgresql://h/db1"},
		{"a keyword string gets a dbname keyword", "host=h user=u", "host=h user=u dbname=db1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := withDatabase(tt.in, "db1")
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("withDatabase(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestUnreachablePostgreSQLNamesMakeServices(t *testing.T) {
	t.Setenv("CARACAL_TEST_DATABASE_URL", unreachable)
	_, _, err := CreateDatabase(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "make services") {
		t.Fatalf("CreateDatabase against a closed port: err = %v, want one naming `make services`", err)
	}

	var buf bytes.Buffer
	stderr = &buf
	defer func() { stderr = os.Stderr }()
	before := "unchanged"
	got := before
	// Main returns before touching m when the database cannot be created.
	if code := Main(nil, "x", &got); code == 0 {
		t.Errorf("Main exit code = 0, want non-zero")
	}
	if got != before {
		t.Errorf("Main set the dsn to %q on failure", got)
	}
	if !strings.Contains(buf.String(), "make services") {
		t.Errorf("Main printed %q, want a message naming `make services`", buf.String())
	}
}

func TestRequireRedisReturnsTheURLWhenRedisAnswers(t *testing.T) {
	if got := RequireRedis(t); got != RedisURL() {
		t.Errorf("RequireRedis = %q, want %q", got, RedisURL())
	}
}

// fatalRecorder captures Fatalf; like testing.T it stops the calling goroutine.
type fatalRecorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.msg = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func TestRequireRedisFailsNamingMakeServices(t *testing.T) {
	t.Setenv("CARACAL_TEST_REDIS_URL", "redis://127.0.0.1:1/0")
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	returned := false
	go func() {
		defer close(done)
		RequireRedis(rec)
		returned = true
	}()
	<-done
	if returned {
		t.Fatal("RequireRedis returned although Redis does not answer")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !strings.Contains(rec.msg, "make services") {
		t.Errorf("failure message %q does not name `make services`", rec.msg)
	}
}

func TestPrivateRedisServerLosesItsDataOnRestart(t *testing.T) {
	s := StartRedisServer(t)
	c := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	n, err := c.Exists(ctx, "k").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("the key survived a restart of a server without persistence")
	}
	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("a stopped server still answers")
	}
}

func TestClockRunsDueTimersInDeadlineOrderOnAdvance(t *testing.T) {
	c := NewClock(time.Unix(1000, 0))
	var fired []string
	c.AfterFunc(2*time.Second, func() { fired = append(fired, "2s") })
	c.AfterFunc(time.Second, func() {
		fired = append(fired, "1s")
		// A timer started by a due one, due at the clock's new time, runs in the same
		// Advance, after those due earlier.
		c.AfterFunc(0, func() { fired = append(fired, "started by 1s") })
	})
	stop := c.AfterFunc(1500*time.Millisecond, func() { fired = append(fired, "stopped") })
	if !stop() || stop() {
		t.Fatal("stop did not report the pending timer once")
	}
	c.Advance(999 * time.Millisecond)
	if len(fired) != 0 || c.Timers() != 2 {
		t.Fatalf("before any deadline: fired %v, %d pending", fired, c.Timers())
	}
	c.Advance(5 * time.Second)
	if want := []string{"1s", "2s", "started by 1s"}; !slices.Equal(fired, want) || c.Timers() != 0 {
		t.Fatalf("fired %v, want %v; %d pending", fired, want, c.Timers())
	}
}
