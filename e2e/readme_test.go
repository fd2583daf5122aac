package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/testenv"
)

// The README's shell blocks are marked with an HTML comment on the line before their
// fence: "<!-- walkthrough: <name> ... -->".
const walkthroughMarker = "<!-- walkthrough: "

// walkthroughBlock returns the body of the ```sh block that follows the one marker named
// name in readme, verbatim.
func walkthroughBlock(readme, name string) (string, error) {
	lines := strings.Split(readme, "\n")
	var block string
	found := 0
	for i, line := range lines {
		rest, ok := strings.CutPrefix(line, walkthroughMarker)
		if f := strings.Fields(rest); !ok || !strings.HasSuffix(line, "-->") || len(f) == 0 || f[0] != name {
			continue
		}
		found++
		if i+1 >= len(lines) || lines[i+1] != "```sh" {
			return "", fmt.Errorf("walkthrough %q: the marker is not followed by a ```sh fence", name)
		}
		end := slices.Index(lines[i+2:], "```")
		if end < 0 {
			return "", fmt.Errorf("walkthrough %q: the ```sh block is not closed", name)
		}
		block = strings.Join(lines[i+2:i+2+end], "\n") + "\n"
	}
	switch found {
	case 0:
		return "", fmt.Errorf("walkthrough %q: no %q marker before a ```sh block", name, walkthroughMarker+name+" -->")
	case 1:
		return block, nil
	default:
		return "", fmt.Errorf("walkthrough %q: %d markers, want one", name, found)
	}
}

// TestREADMEWalkthroughBlockExtraction: a marked block comes out verbatim; a missing,
// repeated or misplaced marker and an unclosed block are errors, not an empty script.
func TestREADMEWalkthroughBlockExtraction(t *testing.T) {
	const readme = "# Title\n\n<!-- walkthrough: a (tested) -->\n```sh\necho 1\n\necho \"$X\" &\n```\n" +
		"text\n<!-- walkthrough: ab -->\n```sh\necho ab\n```\n" +
		"<!-- walkthrough: nofence -->\n\n```sh\necho\n```\n" +
		"<!-- walkthrough: open -->\n```sh\necho\n" +
		"<!-- walkthrough: twice -->\n```sh\n```\n<!-- walkthrough: twice -->\n```sh\n```\n"
	for _, c := range []struct{ name, want, err string }{
		{"a", "echo 1\n\necho \"$X\" &\n", ""},
		{"ab", "echo ab\n", ""},
		{"missing", "", "no \"<!-- walkthrough: missing -->\" marker"},
		{"nofence", "", "not followed by a ```sh fence"},
		{"twice", "", "2 markers"},
	} {
		got, err := walkthroughBlock(readme, c.name)
		if c.err == "" && (err != nil || got != c.want) {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
		if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.err)
		}
	}
	// The last marker's block runs to the end of the text without a closing fence.
	if _, err := walkthroughBlock(strings.Split(readme, "<!-- walkthrough: twice")[0], "open"); err == nil || !strings.Contains(err.Error(), "not closed") {
		t.Errorf("open: error %v", err)
	}
}

// demoPorts moves the demo's site (8443) and upstream (8081) to the test's ports, in the
// Caddyfile and in the README's commands alike.
func demoPorts(port, upstream int) *strings.Replacer {
	return strings.NewReplacer(":8443", ":"+strconv.Itoa(port), ":8081", ":"+strconv.Itoa(upstream))
}

// demoCaddyfile is Caddyfile.example with only its addresses changed: the ports, and the
// admin endpoint (Caddy's default localhost:2019 otherwise) set in the global options.
func demoCaddyfile(t *testing.T, upstream int) func(port, admin int) string {
	t.Helper()
	return exampleCaddyfile(t, "../Caddyfile.example", upstream)
}

// exampleCaddyfile is the demo configuration at path (Caddyfile.example or one under
// examples/) with only its addresses changed, as demoCaddyfile describes.
func exampleCaddyfile(t *testing.T, path string, upstream int) func(port, admin int) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	example := string(raw)
	for _, want := range []string{"https://localhost:8443 {", "127.0.0.1:8081", "http://:8081 {"} {
		if !strings.Contains(example, want) {
			t.Fatalf("%s has no %q: update the port rewrite of this test", path, want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*admin\s`).MatchString(example) {
		t.Fatalf("%s sets the admin endpoint: update the admin rewrite of this test", path)
	}
	if !strings.Contains("\n"+example, "\n{\n") {
		t.Fatalf("%s has no global options block", path)
	}
	return func(port, admin int) string {
		cfg := demoPorts(port, upstream).Replace(example)
		// The global options block opens with a line holding only "{".
		open := strings.Index("\n"+cfg, "\n{\n") + len("{\n")
		return cfg[:open] + fmt.Sprintf("\tadmin 127.0.0.1:%d\n", admin) + cfg[open:]
	}
}

// runWalkthrough runs a README block with bash as a reader pasting it would, then waits
// for the jobs it left in the background. The process group is killed when ctx ends.
func runWalkthrough(t *testing.T, ctx context.Context, block string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", "-c", block+"wait\n")
	home := t.TempDir() // no ~/.curlrc of the developer's
	cmd.Dir, cmd.Env = home, append(os.Environ(), "HOME="+home)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	begin := time.Now()
	err := cmd.Run()
	t.Logf("block ran in %s\nstdout:\n%s\nstderr:\n%s", time.Since(begin).Round(time.Millisecond), &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("the block did not finish in time: %v", ctx.Err())
	}
	if err != nil {
		t.Fatalf("the block failed: %v", err)
	}
	if errOut.Len() > 0 {
		t.Fatalf("the block wrote to stderr: %q", &errOut)
	}
	return out.String()
}

// readmeBlocks returns the quickstart and the delegation example of README.md, verbatim.
func readmeBlocks(t *testing.T) (quickstart, delegation string) {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's commands need %s, which is not installed: run `make services`", tool)
		}
	}
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	quickstart, err = walkthroughBlock(string(raw), "quickstart")
	if err != nil {
		t.Fatal(err)
	}
	delegation, err = walkthroughBlock(string(raw), "delegation")
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]string{"quickstart": quickstart, "delegation": delegation} {
		if !strings.Contains(block, "https://localhost:8443") {
			t.Fatalf("the %s block does not address https://localhost:8443: update the port rewrite of this test", name)
		}
	}
	return quickstart, delegation
}

// runREADMEBlocks runs both blocks against in (whose upstream listens on upstream) and
// checks their outputs.
func runREADMEBlocks(t *testing.T, in *instance, upstream int, quickstart, delegation string) {
	t.Helper()
	ports := demoPorts(in.port, upstream)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("quickstart", func(t *testing.T) {
		stdout := runWalkthrough(t, ctx, ports.Replace(quickstart))
		checkQuickstart(t, stdout, in.url("/api"))
	})
	t.Run("delegation", func(t *testing.T) {
		stdout := runWalkthrough(t, ctx, ports.Replace(delegation))
		checkDelegation(t, stdout)
	})
}

// TestREADMEWalkthrough runs the quickstart and the delegation example of README.md,
// verbatim, against Caddyfile.example (on the test's own ports), and checks the outputs
// that the README shows.
func TestREADMEWalkthrough(t *testing.T) {
	quickstart, delegation := readmeBlocks(t)
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	mcp, err := walkthroughBlock(string(raw), "mcp")
	if err != nil {
		t.Fatal(err)
	}
	upstream := freePort(t)
	in := start(t, demoCaddyfile(t, upstream))
	runREADMEBlocks(t, in, upstream, quickstart, delegation)
	t.Run("mcp", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		stdout := runWalkthrough(t, ctx, demoPorts(in.port, upstream).Replace(mcp))
		checkMCPWalkthrough(t, stdout, in.url("/mcp"))
	})
}

// checkMCPWalkthrough expects the outputs the README's MCP block shows, each on a line
// of its own: the 401 challenge naming the metadata, the RFC 9728 document, the filtered
// listing, the allowed call's text, the refused call's 403 and its insufficient_scope
// challenge, and the end of the streaming call cut by the revocation.
func checkMCPWalkthrough(t *testing.T, stdout, resource string) {
	t.Helper()
	u, err := url.Parse(resource)
	if err != nil {
		t.Fatal(err)
	}
	metadata := u.Scheme + "://" + u.Host + "/.well-known/oauth-protected-resource" + u.Path
	streamEnd := regexp.MustCompile(`^stream ended: curl exit (\d+)$`)
	var got struct{ challenge, document, listing, text, status, refusal, stream bool }
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		lower := strings.ToLower(line)
		switch {
		case strings.HasPrefix(lower, "www-authenticate:") && strings.Contains(line, `error="insufficient_scope"`):
			if !strings.Contains(line, `scope="tool:delete"`) || !strings.Contains(line, `resource_metadata="`+metadata+`"`) {
				t.Errorf("refused call: challenge %q, want scope tool:delete and resource_metadata %s", line, metadata)
			}
			got.refusal = true
		case strings.HasPrefix(lower, "www-authenticate:"):
			if !strings.Contains(line, `resource_metadata="`+metadata+`"`) {
				t.Errorf("401 challenge %q does not name %s", line, metadata)
			}
			got.challenge = true
		case strings.HasPrefix(line, "{"):
			var doc struct {
				Resource             string   `json:"resource"`
				AuthorizationServers []string `json:"authorization_servers"`
			}
			if err := json.Unmarshal([]byte(line), &doc); err != nil || doc.Resource != resource ||
				len(doc.AuthorizationServers) != 1 || !strings.HasSuffix(doc.AuthorizationServers[0], "/zones/demo") {
				t.Errorf("metadata document %q (%v): want resource %s and the demo zone's issuer", line, err, resource)
			}
			got.document = true
		case line == `["search"]`:
			got.listing = true
		case strings.HasPrefix(line, "["):
			t.Errorf("tools/list shows %s, want only [\"search\"]", line)
		case strings.HasPrefix(line, `3 demo documents match "caracal"`):
			got.text = true
		case strings.HasPrefix(line, "HTTP/"):
			if !strings.HasSuffix(strings.TrimSpace(line), " 403") {
				t.Errorf("refused call: status line %q, want 403", line)
			}
			got.status = true
		case streamEnd.MatchString(line):
			if code := streamEnd.FindStringSubmatch(line)[1]; code != "92" && code != "18" {
				t.Errorf("streaming call: curl exit %s, want 92 or 18 (cut by the revocation)", code)
			}
			got.stream = true
		default:
			t.Errorf("unexpected output line %q", line)
		}
	}
	if !got.challenge || !got.document || !got.listing || !got.text || !got.status || !got.refusal || !got.stream {
		t.Fatalf("missing output %+v in:\n%s", got, stdout)
	}
}

// TestREADMEWalkthroughOnPostgresAndRedis follows the README's "Run on PostgreSQL and
// Redis": scripts/run-postgres.sh --prepare creates a database that does not exist yet
// on the shared PostgreSQL server and generates the development secrets, then
// examples/postgres-redis/Caddyfile runs with them against a private redis-server, and
// the quickstart and the delegation example must give the outputs the README shows.
// The revocations must have gone through that Redis and the state into that database.
func TestREADMEWalkthroughOnPostgresAndRedis(t *testing.T) {
	quickstart, delegation := readmeBlocks(t)
	rs := testenv.StartRedisServer(t)

	admin := testenv.DatabaseURL()
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("this test needs CARACAL_TEST_DATABASE_URL as a postgres:// URL, got %q (%v)", admin, err)
	}
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatal(err)
	}
	name := "caracal_e2e_readme_" + hex.EncodeToString(suffix[:])
	u.Path = "/" + name
	dsn := u.String()
	ctx := context.Background()
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("dropping %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping %s: %v", name, err)
		}
	})

	devDir := filepath.Join(t.TempDir(), "dev")
	// prepare runs the script's first steps and returns the variables it would pass to
	// caracal, exactly as it would pass them.
	prepare := func() map[string]string {
		t.Helper()
		cmd := exec.Command("../scripts/run-postgres.sh", "--prepare")
		cmd.Env = append(os.Environ(), "CARACAL_DATABASE_URL="+dsn, "CARACAL_REDIS_URL="+rs.URL(), "CARACAL_DEV_DIR="+devDir)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("run-postgres.sh --prepare: %v\n%s", err, &errOut)
		}
		vars := map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok || vars[k] != "" {
				t.Fatalf("run-postgres.sh --prepare printed %q, want one NAME=value a line", out)
			}
			vars[k] = v
		}
		return vars
	}
	vars := prepare()
	for file, name := range map[string]string{"kek": "CARACAL_KEK", "stream_key": "CARACAL_STREAM_KEY", "admin_token": "CARACAL_ADMIN_TOKEN"} {
		raw, err := os.ReadFile(filepath.Join(devDir, file))
		if err != nil {
			t.Fatalf("the development secret %s: %v", file, err)
		}
		if vars[name] == "" || vars[name] != strings.TrimSpace(string(raw)) {
			t.Fatalf("run-postgres.sh passes %s=%q, want the content of %s", name, vars[name], file)
		}
	}
	if vars["CARACAL_DATABASE_URL"] != dsn || vars["CARACAL_REDIS_URL"] != rs.URL() || len(vars) != 5 {
		t.Fatalf("run-postgres.sh passes %v, want the test's database and Redis and three secrets", vars)
	}
	// A second run keeps the database and the secrets: the key-encryption key must not
	// change under the zone keys it sealed.
	if again := prepare(); !maps.Equal(again, vars) {
		t.Fatal("a second run-postgres.sh changed what it passes")
	}

	var env []string
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	upstream := freePort(t)
	in := start(t, exampleCaddyfile(t, "../examples/postgres-redis/Caddyfile", upstream), env...)
	runREADMEBlocks(t, in, upstream, quickstart, delegation)
	if t.Failed() {
		return
	}

	// The quickstart's revocation and the delegation's went through the private Redis:
	// the revoked session and both edges, beside the relay's heartbeats.
	entries, err := rs.Client().XRange(ctx, "caracal.sessions.revoke", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var revokedSessions, revokedEdges int
	for _, e := range entries {
		if _, ok := e.Values["session_id"]; ok {
			revokedSessions++
		}
		if _, ok := e.Values["delegation_edge_id"]; ok {
			revokedEdges++
		}
	}
	if revokedSessions < 1 || revokedEdges < 2 {
		t.Fatalf("caracal.sessions.revoke on the private Redis carries %d session and %d edge revocations, want the quickstart's session and both edges", revokedSessions, revokedEdges)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var sessions, edges int
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM sessions WHERE zone_id = 'demo' AND status = 'revoked'), (SELECT count(*) FROM delegation_edges WHERE zone_id = 'demo' AND status = 'revoked')").Scan(&sessions, &edges); err != nil {
		t.Fatal(err)
	}
	if sessions < 1 || edges != 2 {
		t.Fatalf("the database %s holds %d revoked sessions and %d revoked edges, want the quickstart's session and both edges", name, sessions, edges)
	}
}

// demoHello is the demo upstream's answer: the identity the gateway passed on.
type demoHello struct {
	Hello            string            `json:"hello"`
	Caracal          map[string]string `json:"caracal"`
	MandateForwarded bool              `json:"mandate_forwarded"`
}

// checkQuickstart expects, each on a line of its own, the upstream's answer to step 3,
// the end of step 4's stream (before or after step 6's line: the two race), and step 6's
// challenge. Step 5's revocation answers 200 with an empty body.
func checkQuickstart(t *testing.T, stdout, resource string) {
	t.Helper()
	u, err := url.Parse(resource)
	if err != nil {
		t.Fatal(err)
	}
	metadata := u.Scheme + "://" + u.Host + "/.well-known/oauth-protected-resource" + u.Path
	wantChallenge := `Bearer realm="` + resource + `", error="invalid_token", error_description="the mandate has been revoked", resource_metadata="` + metadata + `"`
	streamEnd := regexp.MustCompile(`^stream ended: curl exit (\d+)$`)
	var sawHello, sawChallenge, sawStream bool
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, "{"):
			var h demoHello
			if err := json.Unmarshal([]byte(line), &h); err != nil {
				t.Fatalf("step 3: the line %q is not one JSON answer: %v", line, err)
			}
			want := map[string]string{"sub": "demo-agent", "client-id": "demo-agent", "zone": "demo", "scope": "read"}
			for k, v := range want {
				if h.Caracal[k] != v {
					t.Errorf("step 3: caracal.%s = %q, want %q", k, h.Caracal[k], v)
				}
			}
			if h.Hello != "demo-agent" || !h.MandateForwarded || h.Caracal["sid"] == "" {
				t.Errorf("step 3: %+v, want hello demo-agent, a sid and the mandate forwarded", h)
			}
			sawHello = true
		case strings.HasPrefix(strings.ToLower(line), "www-authenticate:"):
			if got := strings.TrimSpace(line[len("www-authenticate:"):]); got != wantChallenge {
				t.Errorf("step 6: challenge %q, want %q", got, wantChallenge)
			}
			sawChallenge = true
		case streamEnd.MatchString(line):
			// 92: HTTP/2 stream reset; 18: a transfer closed with bytes outstanding.
			if code := streamEnd.FindStringSubmatch(line)[1]; code != "92" && code != "18" {
				t.Errorf("step 4: curl exit %s, want 92 or 18 (the stream cut by the revocation)", code)
			}
			sawStream = true
		default:
			t.Errorf("unexpected output line %q", line)
		}
	}
	if !sawHello || !sawChallenge || !sawStream {
		t.Fatalf("missing output: step 3 answer %v, step 4 stream end %v, step 6 challenge %v", sawHello, sawStream, sawChallenge)
	}
}

// checkDelegation expects four JSON values, each ending its line: the helper's mandate
// claims, the upstream's answer, the revocation's answer and the status code 401.
func checkDelegation(t *testing.T, stdout string) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	next := func(what string, v any) {
		t.Helper()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%s: %v in %q", what, err, stdout)
		}
		if off := dec.InputOffset(); off >= int64(len(stdout)) || stdout[off] != '\n' {
			t.Fatalf("%s does not end its line: %q follows it", what, stdout[off:])
		}
	}

	var claims struct {
		Sub            string          `json:"sub"`
		ClientID       string          `json:"client_id"`
		Act            json.RawMessage `json:"act"`
		DelegationPath []string        `json:"delegation_path"`
		HopCount       int             `json:"hop_count"`
	}
	next("the helper's mandate claims", &claims)
	var act, wantAct any
	_ = json.Unmarshal(claims.Act, &act)
	_ = json.Unmarshal([]byte(`{"sub":"helper-agent","act":{"sub":"worker-agent"}}`), &wantAct)
	if claims.Sub != "demo-agent" || claims.ClientID != "helper-agent" || !reflect.DeepEqual(act, wantAct) ||
		claims.HopCount != 2 || len(claims.DelegationPath) != 2 ||
		!strings.HasPrefix(claims.DelegationPath[0], "edg_") || !strings.HasPrefix(claims.DelegationPath[1], "edg_") {
		t.Fatalf("claims %+v (act %s), want sub demo-agent, client_id helper-agent, act helper-agent then worker-agent, two edg_ edges", claims, claims.Act)
	}

	var h demoHello
	next("the delegated call's answer", &h)
	if h.Hello != "demo-agent" || h.Caracal["sub"] != "demo-agent" || h.Caracal["client-id"] != "helper-agent" {
		t.Fatalf("delegated call: %+v, want sub demo-agent called by helper-agent", h)
	}

	var rev struct {
		RevokedEdges []string `json:"revoked_edges"`
		Epoch        int64    `json:"epoch"`
	}
	next("the revocation's answer", &rev)
	slices.Sort(rev.RevokedEdges)
	path := slices.Sorted(slices.Values(claims.DelegationPath))
	if !slices.Equal(rev.RevokedEdges, path) || rev.Epoch <= 0 {
		t.Fatalf("revocation: %+v, want both edges %v and an epoch", rev, path)
	}

	var status int
	next("the status after the revocation", &status)
	if status != 401 {
		t.Fatalf("the helper's mandate after the revocation: %d, want 401", status)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("unexpected output after the 401: %v, %v", extra, err)
	}
}
