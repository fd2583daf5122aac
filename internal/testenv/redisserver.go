package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a private redis-server started by a test on a port of its own, so
// that the test can kill it, lose its data or restart it without touching the shared
// server. It keeps nothing on disk: a restart is a Redis that lost everything.
type RedisServer struct {
	tb   testing.TB
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

// StartRedisServer starts redis-server on a free loopback port and stops it when the
// test ends. It fails the test when redis-server cannot be run (make services installs
// it).
func StartRedisServer(tb testing.TB) *RedisServer {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	s := &RedisServer{tb: tb, port: port}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// Addr is host:port of the server.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the redis:// URL of the server's database 0.
func (s *RedisServer) URL() string { return "redis://" + s.Addr() + "/0" }

// Start runs the server (again) on its port, empty, and waits until it answers.
func (s *RedisServer) Start() {
	s.tb.Helper()
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		s.tb.Fatal("redis-server already running")
	}
	logs := new(bytes.Buffer)
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", s.tb.TempDir())
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.tb.Fatalf("starting a private redis-server (make services installs it): %v", err)
	}
	s.cmd, s.logs = cmd, logs
	s.mu.Unlock()

	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("private redis-server on %s did not answer: %v\n%s", s.Addr(), err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server; everything it held is lost. Stopping a stopped server does
// nothing.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Wait()
}

// Restart kills the server and starts an empty one on the same port: a Redis that
// restarted without persistence.
func (s *RedisServer) Restart() {
	s.tb.Helper()
	s.Stop()
	s.Start()
}

// Client returns a client of the server, closed when the test ends.
func (s *RedisServer) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}

func (s *RedisServer) String() string { return fmt.Sprintf("redis-server on %s", s.Addr()) }
