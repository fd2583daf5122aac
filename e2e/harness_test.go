// Package e2e runs the real caracal binary (built once by TestMain) as separate processes
// on loopback ports and talks to it over real TLS connections.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/testenv"
)

var (
	binary      string
	databaseURL string
)

func TestMain(m *testing.M) {
	// The Node.js that scripts/services.sh installs where the system's is too old comes
	// first, for the tests' node and for npm's own `env node`.
	if runtime, err := filepath.Abs("../scripts/node-runtime/node_modules/.bin"); err == nil {
		if _, err := os.Stat(filepath.Join(runtime, "node")); err == nil {
			os.Setenv("PATH", runtime+string(os.PathListSeparator)+os.Getenv("PATH"))
		}
	}
	dir, err := os.MkdirTemp("", "caracal-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "caracal")
	build := exec.Command("go", "build", "-o", binary, "github.com/caracalgw/caracal/cmd/caracal")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building caracal:", err)
		os.Exit(1)
	}
	code := testenv.Main(m, "e2e", &databaseURL)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// freePort reserves a loopback TCP port; the small race until Caddy binds it is accepted
// in exchange for not hard-coding ports that parallel test packages might share.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// instance is one running caracal process.
type instance struct {
	t      testing.TB
	cmd    *exec.Cmd
	port   int
	admin  int
	dir    string
	client *http.Client
	logs   *syncBuffer
	env    []string // added to the environment of the process
}

// start runs caracal with the Caddyfile produced by caddyfile(port, adminPort); it
// waits until its site answers TLS, builds a client trusting the instance's own CA, and
// waits until the gateway's revocation state is current.
func start(t testing.TB, caddyfile func(port, admin int) string, env ...string) *instance {
	t.Helper()
	in := startStale(t, caddyfile, env...)
	// A gateway route answers 503 until its revocation state is current (its pipeline
	// has rebuilt and read a heartbeat of an outbox relay); wait for that as a client
	// would. A malformed mandate is refused with 401 once the state is current.
	testenv.WaitFor(t, "the gateway's revocation state to be current", func() bool {
		resp, _, err := in.try(t, in.client, "/api/hello", "x.y.z")
		return err == nil && resp.StatusCode != http.StatusServiceUnavailable
	})
	return in
}

// startStale is start without the wait for current revocation state: for processes a
// fault keeps stale.
func startStale(t testing.TB, caddyfile func(port, admin int) string, env ...string) *instance {
	t.Helper()
	in := &instance{t: t, port: freePort(t), admin: freePort(t), dir: t.TempDir(), logs: new(syncBuffer)}
	cfg := filepath.Join(in.dir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile(in.port, in.admin)), 0o600); err != nil {
		t.Fatal(err)
	}
	in.env = env
	t.Cleanup(in.stop)
	in.launch()
	return in
}

// launch runs the process of in (again, after stop: same configuration, data and ports)
// and waits until its site answers TLS with a certificate of its CA.
func (in *instance) launch() {
	t := in.t
	t.Helper()
	cfg := filepath.Join(in.dir, "Caddyfile")
	in.cmd = exec.Command(binary, "run", "--config", cfg, "--adapter", "caddyfile")
	in.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(in.dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(in.dir, "config"), "HOME="+in.dir)
	in.cmd.Env = append(in.cmd.Env, in.env...)
	in.cmd.Stdout, in.cmd.Stderr = in.logs, in.logs
	in.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// Ready means a TLS handshake with the site certificate succeeds: the port opens
		// before the internal CA has issued it.
		root, err := os.ReadFile(filepath.Join(in.dir, "data", "caddy", "pki", "authorities", "local", "root.crt"))
		if err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(root)
			cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
			if c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", in.port), cfg); err == nil {
				c.Close()
				in.client = &http.Client{
					Timeout: 30 * time.Second,
					Transport: &http.Transport{
						TLSClientConfig:   cfg,
						ForceAttemptHTTP2: true,
						DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
							var d net.Dialer
							return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", in.port))
						},
					},
				}
				break
			}
		}
		if in.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("caracal did not start:\n%s", in.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncBuffer collects a process's output; tests may read it while the process writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (in *instance) stop() {
	if in.cmd.Process == nil || in.cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-in.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = in.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if in.t.Failed() {
		in.t.Logf("caracal logs:\n%s", in.logs)
	}
}

// url is an address on the instance; the TLS name is localhost, the dial goes to 127.0.0.1.
func (in *instance) url(path string) string {
	return fmt.Sprintf("https://localhost:%d%s", in.port, path)
}

func (in *instance) do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := in.client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func (in *instance) postForm(t testing.TB, path, form string, basic ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, in.url(path), strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if len(basic) == 2 {
		req.SetBasicAuth(basic[0], basic[1])
	}
	return in.do(t, req)
}
