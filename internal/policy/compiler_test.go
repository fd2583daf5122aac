package policy_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/caracalgw/caracal/internal/policy"
)

// allowAllModules is a one-module bundle that allows everything.
func allowAllModules() map[string]string { return map[string]string{"authz.rego": allowAll} }

// withRules is allowAll followed by n one-line rules, padded so that each line is
// pad bytes long.
func withRules(n, pad int) map[string]string {
	var b strings.Builder
	b.WriteString(allowAll)
	for i := range n {
		line := fmt.Sprintf("r%d := %d", i, i)
		if len(line) < pad-1 {
			line += " # " + strings.Repeat("x", max(0, pad-len(line)-4))
		}
		b.WriteString(line + "\n")
	}
	return map[string]string{"authz.rego": b.String()}
}

// gate is a BeforeCompile hook that, once armed, reports each compilation that starts
// and holds it until released.
type gate struct {
	armed   atomic.Bool
	started chan string
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan string, 16), release: make(chan struct{})}
}

func (g *gate) hook(zoneID string) {
	if g.armed.Load() {
		g.started <- zoneID
		<-g.release
	}
}

func (g *gate) waitStarted(t *testing.T) string {
	t.Helper()
	select {
	case z := <-g.started:
		return z
	case <-time.After(10 * time.Second):
		t.Fatal("no compilation started within 10s")
		return ""
	}
}

func TestCompilerRefusesBundlesOverTheDefaultLimits(t *testing.T) {
	if got := policy.NewCompiler(policy.CompilerOptions{}).Limits(); got != (policy.Limits{MaxBundleBytes: 256 << 10, MaxModules: 64, MaxRules: 2000, CompileTimeout: 2 * time.Second}) {
		t.Fatalf("default limits = %+v", got)
	}
	// The default size, module and rule limits; a roomy time limit, so that a loaded
	// machine (or the race detector) does not turn the other refusals into timeouts.
	c := policy.NewCompiler(policy.CompilerOptions{Limits: policy.Limits{CompileTimeout: time.Minute}})
	tooManyModules := map[string]string{"authz.rego": allowAll}
	for i := range 64 {
		tooManyModules[fmt.Sprintf("m%d.rego", i)] = fmt.Sprintf("package caracal.m%d\n", i)
	}
	for _, tc := range []struct {
		name    string
		modules map[string]string
		want    string
	}{
		{"1 MiB of 19,000 rules", withRules(19_000, 55), "the limit is 262144"},
		{"3,000 short rules", withRules(3_000, 0), "more than 2000 rules"},
		{"65 modules", tooManyModules, "65 modules; the limit is 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Compile(t.Context(), "acme", tc.modules, nil)
			if !errors.Is(err, policy.ErrLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile = %v, want a limit error containing %q", err, tc.want)
			}
			if err := policy.Validate(t.Context(), tc.modules, nil); !errors.Is(err, policy.ErrLimit) {
				t.Fatalf("Validate = %v, want a limit error", err)
			}
		})
	}
	if _, err := c.Compile(t.Context(), "acme", withRules(1_990, 0), nil); err != nil {
		t.Fatalf("a bundle within the limits: %v", err)
	}
}

func TestCompilerTimeLimit(t *testing.T) {
	g := newGate()
	g.armed.Store(true)
	defer close(g.release)
	c := policy.NewCompiler(policy.CompilerOptions{Limits: policy.Limits{CompileTimeout: 20 * time.Millisecond}, BeforeCompile: g.hook})
	_, err := c.Compile(t.Context(), "acme", allowAllModules(), nil)
	if !errors.Is(err, policy.ErrLimit) || !strings.Contains(err.Error(), "longer than the 20ms limit") {
		t.Fatalf("Compile = %v, want the time limit", err)
	}
	// The abandoned compilation still holds the zone's turn until it ends.
	if _, err := c.Compile(t.Context(), "acme", allowAllModules(), nil); !errors.Is(err, policy.ErrBusy) {
		t.Fatalf("Compile while the abandoned one runs = %v, want ErrBusy", err)
	}
}

func TestCompilerPool(t *testing.T) {
	g := newGate()
	g.armed.Store(true)
	c := policy.NewCompiler(policy.CompilerOptions{MaxConcurrent: 1, Limits: policy.Limits{CompileTimeout: time.Minute}, BeforeCompile: g.hook})
	first := make(chan error, 1)
	go func() {
		_, err := c.Compile(context.Background(), "acme", allowAllModules(), nil)
		first <- err
	}()
	if z := g.waitStarted(t); z != "acme" {
		t.Fatalf("started %q", z)
	}
	t.Run("one compilation per zone", func(t *testing.T) {
		_, err := c.Compile(t.Context(), "acme", allowAllModules(), nil)
		if !errors.Is(err, policy.ErrBusy) || !strings.Contains(err.Error(), `zone "acme" is already compiling`) {
			t.Fatalf("second Compile for the zone = %v, want ErrBusy", err)
		}
	})
	t.Run("another zone waits for a worker", func(t *testing.T) {
		// globex cannot start while acme holds the only worker; its caller giving up
		// ends the wait without it ever starting.
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if _, err := c.Compile(ctx, "globex", allowAllModules(), nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Compile while the worker is busy = %v, want the caller's deadline", err)
		}
		select {
		case z := <-g.started:
			t.Fatalf("%s started while the only worker was busy", z)
		default:
		}
	})
	close(g.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compile(t.Context(), "globex", allowAllModules(), nil); err != nil {
		t.Fatalf("Compile once the worker is free: %v", err)
	}
}

const denyV2Module = `package caracal.authz

decision := {"decision": "deny", "evaluation_status": "complete", "reasons": ["v2"]}
`

// TestScheduleNeverWaits: while a scheduled version compiles (held by the hook), the
// zone answers with its installed version, or deny-all without one.
func TestScheduleNeverWaits(t *testing.T) {
	g := newGate()
	c := policy.NewCompiler(policy.CompilerOptions{Limits: policy.Limits{CompileTimeout: time.Minute}, BeforeCompile: g.hook})
	e := policy.NewEmbedded(policy.EmbeddedOptions{Timeout: roomy, Compiler: c})
	if err := e.Load(t.Context(), "acme", bundle("acme", 1, allowAll)); err != nil {
		t.Fatal(err)
	}
	g.armed.Store(true)

	e.Schedule("acme", bundle("acme", 2, denyV2Module))
	e.Schedule("globex", bundle("globex", 1, allowAll))
	g.waitStarted(t)
	g.waitStarted(t)
	if d := e.Evaluate(t.Context(), "acme", exchange("billing-agent")); !d.Allow {
		t.Fatalf("acme while v2 compiles: %+v, want v1's allow", d)
	}
	in := exchange("billing-agent")
	in.ZoneID = "globex"
	if d := e.Evaluate(t.Context(), "globex", in); d.Allow || d.Reason != "policy bundle of zone is still compiling" {
		t.Fatalf("globex while its first bundle compiles: %+v, want deny-all", d)
	}
	if v, _ := e.Version("acme"); v != 1 {
		t.Fatalf("acme version %d while v2 compiles, want 1", v)
	}
	// Scheduling the compiling version again starts nothing new.
	e.Schedule("acme", bundle("acme", 2, denyV2Module))
	close(g.release)
	waitVersion(t, e, "acme", 2)
	waitVersion(t, e, "globex", 1)
	select {
	case z := <-g.started:
		t.Fatalf("a second compilation of %s started", z)
	default:
	}
	if d := e.Evaluate(t.Context(), "acme", exchange("billing-agent")); d.Allow || d.Reason != "policy denied: v2" {
		t.Fatalf("acme after v2 compiled: %+v", d)
	}
}

func TestInstallSupersedesAScheduledCompilation(t *testing.T) {
	g := newGate()
	c := policy.NewCompiler(policy.CompilerOptions{Limits: policy.Limits{CompileTimeout: time.Minute}, BeforeCompile: g.hook})
	e := policy.NewEmbedded(policy.EmbeddedOptions{Timeout: roomy, Compiler: c})
	g.armed.Store(true)
	e.Schedule("acme", bundle("acme", 2, denyV2Module))
	g.waitStarted(t)
	g.armed.Store(false)
	// An upload compiled elsewhere (another zone key: the compiler's per-zone turn is
	// taken by the scheduled one) and installed as version 3 wins.
	v3, err := c.Compile(t.Context(), "acme-upload", allowAllModules(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Install("acme", 3, v3)
	close(g.release)
	// The held compilation of version 2 ends and is dropped; a compilation afterwards
	// proves it ended (the zone's turn is free again).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Compile(t.Context(), "acme", allowAllModules(), nil); err == nil {
			break
		} else if !errors.Is(err, policy.ErrBusy) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if v, _ := e.Version("acme"); v != 3 {
		t.Fatalf("version %d, want 3: a superseded compilation was installed", v)
	}
	if d := e.Evaluate(t.Context(), "acme", exchange("billing-agent")); !d.Allow {
		t.Fatalf("decision %+v, want version 3's allow", d)
	}
}

// TestReplacedBundlesAreReleased: the engine keeps no reference to a version it
// replaced or removed.
func TestReplacedBundlesAreReleased(t *testing.T) {
	c := policy.NewCompiler(policy.CompilerOptions{Limits: policy.Limits{CompileTimeout: time.Minute}})
	e := policy.NewEmbedded(policy.EmbeddedOptions{Timeout: roomy, Compiler: c})
	compile := func() weak.Pointer[policy.Compiled] {
		t.Helper()
		compiled, err := c.Compile(t.Context(), "acme", withRules(1_000, 0), nil)
		if err != nil {
			t.Fatal(err)
		}
		e.Install("acme", 1, compiled)
		return weak.Make(compiled)
	}
	replaced := compile()
	e.Install("acme", 2, mustCompile(t, c))
	removed := compile()
	e.Schedule("acme", nil)
	runtime.GC()
	if replaced.Value() != nil {
		t.Error("a replaced bundle is still referenced")
	}
	if removed.Value() != nil {
		t.Error("a removed bundle is still referenced")
	}
}

func mustCompile(t *testing.T, c *policy.Compiler) *policy.Compiled {
	t.Helper()
	compiled, err := c.Compile(t.Context(), "acme", allowAllModules(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return compiled
}

func waitVersion(t *testing.T, e *policy.Embedded, zoneID string, version int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, ok := e.Version(zoneID); ok && v == version {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: version %d not installed within 10s", zoneID, version)
		}
		time.Sleep(time.Millisecond)
	}
}
