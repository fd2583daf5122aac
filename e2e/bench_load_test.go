package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The load report's sizes. One run of BenchmarkLoadReport takes a few minutes on two
// cores; every loop below is bounded by these counts.
const (
	loadRounds      = 7    // rounds of each side, alternating, per row
	loadWarmC32     = 3000 // requests per round at c=32, warm rows
	loadWarmC1      = 1000 // requests per round at c=1, warm rows
	loadColdC32     = 1500 // requests per round at c=32, cold row (one new mandate each)
	loadColdC1      = 500  // requests per round at c=1, cold row
	loadDistinct    = 1000 // mandates of the "1,000 mandates" row
	loadSessions    = 2000 // sessions of the exchange rows
	loadExchanges   = 2000 // exchanges per round
	loadExchangeC   = 16   // concurrent exchange clients
	loadSigns       = 4000 // raw ES256 signatures per round
	loadStreamBytes = 1 << 30
	loadStreamRound = 3 // rounds of each side of the stream row
	loadBodyBytes   = 4 << 10
	loadMCPC32      = 2500 // requests per round at c=32, MCP row
	loadMCPC1       = 800  // requests per round at c=1, MCP row
)

// loadMCPCall is the JSON-RPC request of the MCP row and loadMCPResult the upstream's
// answer to it.
const (
	loadMCPCall   = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{"query":"caracal"}}}`
	loadMCPResult = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"3 documents match"}]}}`
)

// loadUpstream is the loopback upstream of the load report, in the test process so the
// server's CPU figures are the gateway's alone: /4k answers 4 KiB, /stream 1 GiB, /rpc a
// small JSON-RPC result.
func loadUpstream(t testing.TB) string {
	t.Helper()
	body := make([]byte, loadBodyBytes)
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/4k"):
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		case strings.HasSuffix(r.URL.Path, "/rpc"):
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(loadMCPResult)))
			_, _ = io.WriteString(w, loadMCPResult)
		case strings.HasSuffix(r.URL.Path, "/stream"):
			w.Header().Set("Content-Length", strconv.Itoa(loadStreamBytes))
			for sent := 0; sent < loadStreamBytes; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// loadSite is the plain-HTTP site of the load report: the same upstream behind a plain
// reverse_proxy route, behind caracal_mandate, behind the same caracal_mandate with an mcp
// block (the tool lookup needs read), behind a plain route that adds five headers the size
// of caracal_mandate's identity headers (a control: what forwarding them costs without
// any verification), and the STS endpoints.
func loadSite(port int, base, upstream string) string {
	return fmt.Sprintf(`
http://127.0.0.1:%[1]d {
	caracal_sts
	handle /plain/* {
		reverse_proxy %[3]s
	}
	handle /mandate/* {
		caracal_mandate {
			issuer %[2]s/zones/alpha
			resource %[2]s/api
			scopes read
			revocation local
		}
		reverse_proxy %[3]s
	}
	handle /headers/* {
		reverse_proxy %[3]s {
			header_up X-Caracal-Sub agent
			header_up X-Caracal-Client-Id agent
			header_up X-Caracal-Zone alpha
			header_up X-Caracal-Scope read
			header_up X-Caracal-Sid ses_0123456789abcdef
		}
	}
	handle /mcp/* {
		caracal_mandate {
			issuer %[2]s/zones/alpha
			resource %[2]s/api
			scopes read
			revocation local
			mcp {
				tool lookup read
				default deny
			}
		}
		reverse_proxy %[3]s
	}
}
`, port, base, upstream)
}

// loadInstance is a caracal process of the load report with its plain-HTTP site.
type loadInstance struct {
	*instance
	http   int
	client *http.Client
}

func startLoadInstance(b *testing.B, storage, upstream string) *loadInstance {
	b.Helper()
	httpPort := freePort(b)
	gen := gatewayConfig{serveSTS: true, storage: storage}.build(b)
	in := start(b, func(port, admin int) string {
		return gen(port, admin) + loadSite(httpPort, fmt.Sprintf("https://localhost:%d", port), upstream)
	})
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	return &loadInstance{instance: in, http: httpPort, client: &http.Client{Transport: tr, Timeout: 10 * time.Minute}}
}

func (li *loadInstance) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", li.http, path)
}

func (li *loadInstance) pid() int { return li.cmd.Process.Pid }

// profile starts fetching a CPU profile of seconds from the server's admin endpoint
// into path; the returned function waits for it.
func (li *loadInstance) profile(b *testing.B, path string, seconds int) func() {
	var wg sync.WaitGroup
	wg.Go(func() {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", li.admin, seconds))
		if err != nil {
			b.Error(err)
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("profile: %d %s", resp.StatusCode, raw)
		}
		if err == nil {
			err = os.WriteFile(path, raw, 0o644)
		}
		if err != nil {
			b.Error(err)
		}
	})
	return wg.Wait
}

// procCPU is the CPU time the process's threads have run so far: the sum of the first
// field of /proc/<pid>/task/*/schedstat, in nanoseconds (Go keeps its threads, so none of
// the process's time leaves with an exited thread during a run).
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, t := range tasks {
		raw, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread ended between the listing and the read
		}
		ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
		if err != nil {
			b.Fatalf("reading %s: %v", raw, err)
		}
		total += time.Duration(ns)
	}
	return total
}

// mint exchanges session mandates of n fresh sessions (reused round-robin over sessions)
// for n resource mandates, from 8 concurrent clients.
func (li *loadInstance) mint(b *testing.B, sessions []string, n int) []string {
	b.Helper()
	out := make([]string, n)
	if _, _, err := drive(8, n, func(i int) error {
		m, err := li.exchange(sessions[i%len(sessions)])
		out[i] = m
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return out
}

// exchange is one RFC 8693 exchange of a session mandate for the /api mandate over HTTP.
func (li *loadInstance) exchange(session string) (string, error) {
	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {session},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"resource":           {fmt.Sprintf("https://localhost:%d/api", li.port)},
		"scope":              {"read"},
	}
	resp, err := li.client.Post(li.url("/zones/alpha/oauth2/token"), "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("exchange: %d %s", resp.StatusCode, body)
	}
	return tokenIn(body)
}

// tokenIn finds the access_token of a token endpoint answer without a JSON decoder, so
// that the clients of the load report spend little of the shared CPU on it.
func tokenIn(body []byte) (string, error) {
	const key = `"access_token":"`
	i := strings.Index(string(body), key)
	if i < 0 {
		return "", fmt.Errorf("no access token in %s", body)
	}
	rest := string(body[i+len(key):])
	return rest[:strings.IndexByte(rest, '"')], nil
}

// sessions opens n sessions of zone alpha's agent over HTTP, from 8 concurrent clients.
func (li *loadInstance) sessions(b *testing.B, n int) []string {
	b.Helper()
	out := make([]string, n)
	if _, _, err := drive(8, n, func(i int) error {
		req, err := http.NewRequest(http.MethodPost, li.url("/zones/alpha/oauth2/token"), strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("agent", agentSecret)
		resp, err := li.client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("client_credentials: %d %s %v", resp.StatusCode, body, err)
		}
		out[i], err = tokenIn(body)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return out
}

// sample is one round of one side: how many operations, how long, the server CPU it
// cost and each operation's latency.
type sample struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration
	lat     []time.Duration
}

// side accumulates a side's rounds.
type side struct{ rounds []sample }

func (s *side) rate() float64 {
	r := make([]float64, len(s.rounds))
	for i, x := range s.rounds {
		r[i] = float64(x.n) / x.elapsed.Seconds()
	}
	return median(r)
}

func (s *side) cpuPer() time.Duration {
	r := make([]float64, len(s.rounds))
	for i, x := range s.rounds {
		r[i] = float64(x.cpu) / float64(x.n)
	}
	return time.Duration(median(r))
}

func (s *side) pct(p int) time.Duration {
	var all []time.Duration
	for _, x := range s.rounds {
		all = append(all, x.lat...)
	}
	return percentile(all, p)
}

// spread is the largest relative distance of a round's rate from the median rate: how
// noisy the side was in this run.
func (s *side) spread() float64 {
	m := s.rate()
	worst := 0.0
	for _, x := range s.rounds {
		d := float64(x.n)/x.elapsed.Seconds()/m - 1
		worst = max(worst, d, -d)
	}
	return worst
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// drive runs n operations from c concurrent clients; op(i) is the i-th.
func drive(c, n int, op func(i int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var fail atomic.Value
	start := time.Now()
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t := time.Now()
				if err := op(i); err != nil {
					fail.Store(err)
					return
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	err, _ := fail.Load().(error)
	return lat, elapsed, err
}

// get fetches path with the mandate (none when empty) and discards the body.
func (li *loadInstance) get(path, token string) error {
	req, err := http.NewRequest(http.MethodGet, li.url(path), nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := li.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, make([]byte, 64<<10)); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return nil
}

// postMCP sends the MCP row's tools/call to path with the mandate, as an MCP client
// does, and discards the answer.
func (li *loadInstance) postMCP(path, token string) error {
	req, err := http.NewRequest(http.MethodPost, li.url(path), strings.NewReader(loadMCPCall))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := li.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != loadMCPResult {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, body)
	}
	return nil
}

// interleave runs rounds of each side in turn, the order swapped every round so neither
// side always runs second, measuring the server CPU of each round.
// pid(s) is the process whose CPU side s is charged.
func interleave(b *testing.B, pid func(side int) int, rounds int, sides []*side, run func(side, round int) ([]time.Duration, time.Duration, int)) {
	b.Helper()
	for r := range rounds {
		for k := range sides {
			s := (r + k) % len(sides)
			before := procCPU(b, pid(s))
			lat, elapsed, n := run(s, r)
			sides[s].rounds = append(sides[s].rounds, sample{n: n, elapsed: elapsed, cpu: procCPU(b, pid(s)) - before, lat: lat})
		}
	}
}

// report collects the markdown tables.
type report struct{ strings.Builder }

func (r *report) table(title string, header ...string) {
	fmt.Fprintf(r, "\n%s\n\n| %s |\n|%s\n", title, strings.Join(header, " | "), strings.Repeat("---|", len(header)))
}

func (r *report) row(cells ...string) { fmt.Fprintf(r, "| %s |\n", strings.Join(cells, " | ")) }

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func pctf(f float64) string { return fmt.Sprintf("±%.0f %%", 100*f) }

// BenchmarkLoadReport starts the real binary and measures, in one run with the rounds of
// each comparison interleaved, plain reverse_proxy against caracal_mandate in front of the
// same 4 KiB loopback upstream (one warm mandate, 1,000 warm mandates, a new mandate on
// every request, and two controls: a plain route that only adds five identity-sized
// headers, and plain requests that carry the mandate) from 1 and from 32 clients; an MCP tools/call through caracal_mandate with
// an mcp block against the same route without it; token exchanges over HTTP on the memory store
// and on PostgreSQL with 2,000 sessions against raw ES256 signing; and a 1 GiB stream
// through both routes. Rates and CPU figures are medians over rounds; every ratio is
// against the baseline measured in the same run. It prints markdown tables, also written
// to the file named by $LOADTEST_REPORT when set; with $LOADTEST_PROFILE_DIR set it also
// saves CPU profiles of the server there: one during each cold row and one of
// exchanges on the memory store. Run it once:
//
//	go test ./e2e -run '^$' -bench LoadReport -benchtime 1x -timeout 30m
func BenchmarkLoadReport(b *testing.B) {
	up := loadUpstream(b)
	mem := startLoadInstance(b, "", up)
	pg := startLoadInstance(b, postgresStorage(b), up)
	for b.Loop() {
		var r report
		fmt.Fprintf(&r, "Load report: %d cores (GOMAXPROCS %d), load average at start %s.\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), loadAverage())
		gatewayRows(b, &r, mem)
		mcpRows(b, &r, mem)
		exchangeRows(b, &r, mem, pg)
		streamRows(b, &r, mem)
		fmt.Fprintf(&r, "\nLoad average at end %s.\n", loadAverage())
		fmt.Println(r.String())
		if path := os.Getenv("LOADTEST_REPORT"); path != "" {
			if err := os.WriteFile(path, []byte(r.String()), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	return strings.Join(f[:3], " ")
}

// gatewayRows compares plain reverse_proxy with caracal_mandate to the 4 KiB upstream.
func gatewayRows(b *testing.B, r *report, li *loadInstance) {
	sessions := li.sessions(b, 8)
	one := li.mint(b, sessions, 1)
	many := li.mint(b, sessions, loadDistinct)
	// Verified once, so the warm rows measure the verified-token cache.
	if _, _, err := drive(8, len(many), func(i int) error { return li.get("/mandate/4k", many[i]) }); err != nil {
		b.Fatal(err)
	}
	r.table(fmt.Sprintf("Gateway, 4 KiB upstream over HTTP/1.1 keep-alive (%d rounds per side, alternating; rate and CPU are medians of rounds, ± the widest round's distance from the median rate)", loadRounds),
		"clients", "route", "req/s", "ratio to plain", "p50", "p99", "added p50", "server CPU/req", "added CPU/req", "noise")
	coldAdded := map[int]time.Duration{}
	for _, c := range []int{1, 32} {
		warm, cold := loadWarmC32, loadColdC32
		if c == 1 {
			warm, cold = loadWarmC1, loadColdC1
		}
		// A fresh mandate for every request of the cold row, minted before it runs.
		fresh := li.mint(b, sessions, cold*loadRounds)
		cases := []struct {
			name  string
			path  string
			n     int
			cold  bool
			token func(round, i int) string
		}{
			{"control: plain reverse_proxy adding five X-Caracal-* headers (header_up)", "/headers/4k", warm, false, func(int, int) string { return "" }},
			{"control: plain reverse_proxy, the request carrying the mandate (Authorization)", "/plain/4k", warm, false, func(int, int) string { return one[0] }},
			{"caracal_mandate, one mandate (cache warm)", "/mandate/4k", warm, false, func(int, int) string { return one[0] }},
			{"caracal_mandate, 1,000 mandates (cache warm)", "/mandate/4k", warm, false, func(_, i int) string { return many[i%len(many)] }},
			{"caracal_mandate, new mandate every request (cold)", "/mandate/4k", cold, true, func(round, i int) string { return fresh[round*cold+i] }},
		}
		for _, cs := range cases {
			plain, guarded := new(side), new(side)
			if dir := os.Getenv("LOADTEST_PROFILE_DIR"); dir != "" && cs.cold {
				// A CPU profile of the server over the row's first seconds, from Caddy's
				// admin endpoint, for `go tool pprof`.
				done := li.profile(b, fmt.Sprintf("%s/cold-c%d.pprof", dir, c), 3)
				defer done()
			}
			interleave(b, func(int) int { return li.pid() }, loadRounds, []*side{plain, guarded}, func(s, round int) ([]time.Duration, time.Duration, int) {
				lat, elapsed, err := drive(c, cs.n, func(i int) error {
					if s == 0 {
						return li.get("/plain/4k", "")
					}
					return li.get(cs.path, cs.token(round, i))
				})
				if err != nil {
					b.Fatal(err)
				}
				return lat, elapsed, cs.n
			})
			cl := strconv.Itoa(c)
			if cs.cold {
				coldAdded[c] = guarded.cpuPer() - plain.cpuPer()
			}
			r.row(cl, "plain reverse_proxy (same rounds)", fmt.Sprintf("%.0f", plain.rate()), "1.00", us(plain.pct(50)), us(plain.pct(99)), "", us(plain.cpuPer()), "", pctf(plain.spread()))
			r.row(cl, cs.name, fmt.Sprintf("%.0f", guarded.rate()), fmt.Sprintf("%.2f", guarded.rate()/plain.rate()),
				us(guarded.pct(50)), us(guarded.pct(99)), us(guarded.pct(50)-plain.pct(50)), us(guarded.cpuPer()), us(guarded.cpuPer()-plain.cpuPer()), pctf(guarded.spread()))
		}
	}
	raw := rawVerify(b)
	fmt.Fprintf(r, "\nOne raw P-256 verification (crypto/ecdsa, CPU time of one thread of this process, same run): %s; added CPU of a cold request over it: %.2f× at c=1, %.2f× at c=32.\n",
		us(raw), float64(coldAdded[1])/float64(raw), float64(coldAdded[32])/float64(raw))
}

// rawVerify is the median CPU time of one ECDSA P-256 verification of a SHA-256 digest,
// read from this thread's schedstat so that a loaded machine does not inflate it.
func rawVerify(b *testing.B) time.Duration {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("caracal load report"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const n = 400
	var runs []float64
	for range 7 {
		before := threadCPU(b)
		for range n {
			if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
				b.Fatal("verification failed")
			}
		}
		runs = append(runs, float64(threadCPU(b)-before)/n)
	}
	return time.Duration(median(runs))
}

// threadCPU is the CPU time of the calling OS thread, from /proc/thread-self/schedstat.
func threadCPU(b *testing.B) time.Duration {
	raw, err := os.ReadFile("/proc/thread-self/schedstat")
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ns)
}

// signES256 signs a compact JWS of a mandate-sized claims set, as an STS would.
func signES256(key *ecdsa.PrivateKey, i int) error {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"k1","typ":"JWT"}`))
	claims := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil,
		`{"iss":"https://localhost/zones/alpha","sub":"agent","aud":"https://localhost/api","scope":"read","sid":"s%d","jti":"j%d","iat":%d,"exp":%d}`,
		i, i, time.Now().Unix(), time.Now().Unix()+300))
	digest := sha256.Sum256([]byte(header + "." + claims))
	_, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	return err
}

// errStop ends a drive loop that runs until a deadline.
var errStop = errors.New("deadline reached")

// exchangeRows measures token exchanges over HTTP on both stores against raw signing,
// and against the HTTP floor: a GET of the zone's JWKS from the same clients, which pays
// the request handling of the STS endpoints and none of an exchange's work.
func exchangeRows(b *testing.B, r *report, mem, pg *loadInstance) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	memSessions := mem.sessions(b, loadSessions)
	pgSessions := pg.sessions(b, loadSessions)
	if dir := os.Getenv("LOADTEST_PROFILE_DIR"); dir != "" {
		// A CPU profile of the STS over 3 s of exchanges on the memory store, before the
		// measured rounds and outside them.
		done := mem.profile(b, dir+"/exchange-memory.pprof", 3)
		deadline := time.Now().Add(3500 * time.Millisecond)
		if _, _, err := drive(loadExchangeC, 1<<20, func(i int) error {
			if time.Now().After(deadline) {
				return errStop
			}
			_, err := mem.exchange(memSessions[i%len(memSessions)])
			return err
		}); err != nil && err != errStop {
			b.Fatal(err)
		}
		done()
	}
	const (
		memSide = iota
		pgSide
		rawSide
		floorSide
	)
	sides := []*side{new(side), new(side), new(side), new(side)}
	instances := []*loadInstance{mem, pg}
	all := [][]string{memSessions, pgSessions}
	var offset [2]int
	// The raw side's CPU is this process's, idle but for the signing goroutines.
	pids := []int{mem.pid(), pg.pid(), os.Getpid(), mem.pid()}
	interleave(b, func(s int) int { return pids[s] }, loadRounds, sides, func(s, _ int) ([]time.Duration, time.Duration, int) {
		var lat []time.Duration
		var elapsed time.Duration
		var err error
		switch s {
		case rawSide:
			lat, elapsed, err = drive(runtime.GOMAXPROCS(0), loadSigns, func(i int) error { return signES256(key, i) })
			if err != nil {
				b.Fatal(err)
			}
			return lat, elapsed, loadSigns
		case floorSide:
			lat, elapsed, err = drive(loadExchangeC, loadExchanges, func(int) error { return mem.get("/zones/alpha/jwks.json", "") })
		default:
			li, ss, base := instances[s], all[s], offset[s]
			offset[s] += loadExchanges
			lat, elapsed, err = drive(loadExchangeC, loadExchanges, func(i int) error {
				_, err := li.exchange(ss[(base+i)%len(ss)])
				return err
			})
		}
		if err != nil {
			b.Fatal(err)
		}
		return lat, elapsed, loadExchanges
	})
	r.table(fmt.Sprintf("Token exchange over HTTP, %d sessions per store, %d clients (%d rounds per side, alternating)", loadSessions, loadExchangeC, loadRounds),
		"what", "per second", "ratio to raw signing", "ratio to the HTTP floor", "p50", "p99", "CPU per operation", "noise")
	raw, floor := sides[rawSide], sides[floorSide]
	row := func(name string, s *side) {
		r.row(name, fmt.Sprintf("%.0f", s.rate()), fmt.Sprintf("%.2f", s.rate()/raw.rate()), fmt.Sprintf("%.2f", s.rate()/floor.rate()),
			us(s.pct(50)), us(s.pct(99)), us(s.cpuPer()), pctf(s.spread()))
	}
	row(fmt.Sprintf("raw ES256 signing, %d goroutines, this process", runtime.GOMAXPROCS(0)), raw)
	row("HTTP floor: GET jwks.json, memory store", floor)
	row("exchange, memory store", sides[memSide])
	row("exchange, PostgreSQL store", sides[pgSide])
	rest := sides[memSide].cpuPer() - floor.cpuPer() - raw.cpuPer()
	fmt.Fprintf(r, "\nServer CPU of an exchange on the memory store: %s = the HTTP floor %s + one raw signature %s + %s for the exchange's own work (subject verification, policy, response).\n",
		us(sides[memSide].cpuPer()), us(floor.cpuPer()), us(raw.cpuPer()), us(rest))
}

// streamRows sends 1 GiB through the plain and the guarded route.
func streamRows(b *testing.B, r *report, li *loadInstance) {
	m := li.mint(b, li.sessions(b, 1), 1)[0]
	plain, guarded := new(side), new(side)
	interleave(b, func(int) int { return li.pid() }, loadStreamRound, []*side{plain, guarded}, func(s, _ int) ([]time.Duration, time.Duration, int) {
		path, token := "/plain/stream", ""
		if s == 1 {
			path, token = "/mandate/stream", m
		}
		start := time.Now()
		if err := li.get(path, token); err != nil {
			b.Fatal(err)
		}
		return nil, time.Since(start), 1
	})
	gib := func(s *side) string { return fmt.Sprintf("%.0f", float64(loadStreamBytes)/1e6*s.rate()) }
	cpu := func(s *side) string { return fmt.Sprintf("%.2f s", s.cpuPer().Seconds()) }
	r.table(fmt.Sprintf("1 GiB stream over HTTP/1.1 (%d rounds per side, alternating)", loadStreamRound),
		"route", "MB/s", "ratio to plain", "server CPU per GiB", "CPU ratio", "noise")
	r.row("plain reverse_proxy", gib(plain), "1.00", cpu(plain), "1.00", pctf(plain.spread()))
	r.row("caracal_mandate", gib(guarded), fmt.Sprintf("%.2f", guarded.rate()/plain.rate()), cpu(guarded),
		fmt.Sprintf("%.2f", float64(guarded.cpuPer())/float64(plain.cpuPer())), pctf(guarded.spread()))
}

// mcpRows compares an MCP tools/call through caracal_mandate with an mcp block against
// the same route without the block, one warm mandate, the upstream answering a small
// JSON-RPC result.
func mcpRows(b *testing.B, r *report, li *loadInstance) {
	m := li.mint(b, li.sessions(b, 1), 1)[0]
	r.table(fmt.Sprintf("MCP tools/call (%d-byte JSON-RPC request, %d-byte result) over HTTP/1.1 keep-alive, one mandate, cache warm (%d rounds per side, alternating)", len(loadMCPCall), len(loadMCPResult), loadRounds),
		"clients", "route", "req/s", "ratio to no mcp block", "p50", "p99", "added p50", "server CPU/req", "added CPU/req", "noise")
	for _, c := range []int{1, 32} {
		n := loadMCPC32
		if c == 1 {
			n = loadMCPC1
		}
		without, with := new(side), new(side)
		interleave(b, func(int) int { return li.pid() }, loadRounds, []*side{without, with}, func(s, _ int) ([]time.Duration, time.Duration, int) {
			path := "/mandate/rpc"
			if s == 1 {
				path = "/mcp/rpc"
			}
			lat, elapsed, err := drive(c, n, func(int) error { return li.postMCP(path, m) })
			if err != nil {
				b.Fatal(err)
			}
			return lat, elapsed, n
		})
		cl := strconv.Itoa(c)
		r.row(cl, "caracal_mandate, no mcp block (same rounds)", fmt.Sprintf("%.0f", without.rate()), "1.00", us(without.pct(50)), us(without.pct(99)), "", us(without.cpuPer()), "", pctf(without.spread()))
		r.row(cl, "caracal_mandate with an mcp block", fmt.Sprintf("%.0f", with.rate()), fmt.Sprintf("%.2f", with.rate()/without.rate()),
			us(with.pct(50)), us(with.pct(99)), us(with.pct(50)-without.pct(50)), us(with.cpuPer()), us(with.cpuPer()-without.cpuPer()), pctf(with.spread()))
	}
}
