package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
)

// Default bundle limits: a generous policy is a few dozen rules in a few modules, so
// these leave room for large grant tables while bounding what one upload can cost.
const (
	DefaultMaxBundleBytes  = 256 << 10
	DefaultMaxModules      = 64
	DefaultMaxRules        = 2000
	DefaultCompileTimeout  = 2 * time.Second
	DefaultMaxCompilations = 2
)

// ErrBusy is returned by Compiler.Compile when the zone already has a compilation
// running: one zone compiles one bundle at a time.
var ErrBusy = errors.New("policy compiler busy")

// ErrLimit marks a bundle refused by a Limits bound (size, modules, rules, time).
var ErrLimit = errors.New("limit exceeded")

// Limits bound what one bundle may cost to compile. Zero fields take the defaults.
type Limits struct {
	// MaxBundleBytes bounds the module sources, their names and the data document together.
	MaxBundleBytes int
	// MaxModules bounds the number of modules.
	MaxModules int
	// MaxRules bounds the number of rules over all modules (else branches count).
	MaxRules int
	// CompileTimeout bounds one compilation. OPA's compiler cannot be interrupted, so a
	// compilation past the limit is refused at once but keeps its worker until it ends.
	CompileTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxBundleBytes <= 0 {
		l.MaxBundleBytes = DefaultMaxBundleBytes
	}
	if l.MaxModules <= 0 {
		l.MaxModules = DefaultMaxModules
	}
	if l.MaxRules <= 0 {
		l.MaxRules = DefaultMaxRules
	}
	if l.CompileTimeout <= 0 {
		l.CompileTimeout = DefaultCompileTimeout
	}
	return l
}

// CompilerOptions configures NewCompiler.
type CompilerOptions struct {
	Limits Limits
	// MaxConcurrent bounds compilations running at once over all zones (default 2).
	MaxConcurrent int
	// BeforeCompile, when set, runs in the worker just before a compilation starts (its
	// time counts against CompileTimeout). It is for tests and instrumentation.
	BeforeCompile func(zoneID string)
}

// Compiler compiles zones' bundles under the sandbox's capabilities and its limits,
// in a bounded pool: at most MaxConcurrent at once, one per zone. Safe for concurrent
// use; one Compiler is meant to be shared by everything that compiles in a process.
type Compiler struct {
	limits Limits
	slots  chan struct{}
	before func(string)

	mu    sync.Mutex
	zones map[string]*zoneTurn
}

// zoneTurn serialises one zone's compilations; it is dropped when nobody holds or
// waits for it.
type zoneTurn struct {
	ch    chan struct{}
	users int
}

// Compiled is a bundle compiled by a Compiler, ready to be installed in an engine.
type Compiled struct {
	query rego.PreparedEvalQuery
}

// NewCompiler returns a compiler with opts' limits.
func NewCompiler(opts CompilerOptions) *Compiler {
	n := opts.MaxConcurrent
	if n <= 0 {
		n = DefaultMaxCompilations
	}
	return &Compiler{
		limits: opts.Limits.withDefaults(),
		slots:  make(chan struct{}, n),
		before: opts.BeforeCompile,
		zones:  make(map[string]*zoneTurn),
	}
}

// Limits returns the limits in force, defaults filled in.
func (c *Compiler) Limits() Limits { return c.limits }

// Compile checks and compiles a bundle for zoneID. It returns ErrBusy at once when
// the zone already has a compilation running, waits (as long as ctx allows) for a
// worker, and refuses a bundle over a limit with an error wrapping ErrLimit.
func (c *Compiler) Compile(ctx context.Context, zoneID string, modules map[string]string, data json.RawMessage) (*Compiled, error) {
	return c.compile(ctx, zoneID, modules, data, false, nil)
}

// compile is Compile; with wait it queues behind the zone's running compilation
// instead of returning ErrBusy, and once it is the zone's turn it gives up (returning
// errSuperseded) if wanted reports false.
func (c *Compiler) compile(ctx context.Context, zoneID string, modules map[string]string, data json.RawMessage, wait bool, wanted func() bool) (*Compiled, error) {
	if err := c.checkSize(modules, data); err != nil {
		return nil, err
	}
	releaseZone, err := c.acquireZone(ctx, zoneID, wait)
	if err != nil {
		return nil, err
	}
	if wanted != nil && !wanted() {
		releaseZone()
		return nil, errSuperseded
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		releaseZone()
		return nil, fmt.Errorf("policy compilation abandoned: %w", ctx.Err())
	}
	type result struct {
		pq  rego.PreparedEvalQuery
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The worker keeps its slot and the zone's turn until OPA returns, even when
		// the caller has stopped waiting: the pool bounds work actually running. They
		// are free before the caller learns the result.
		if c.before != nil {
			c.before(zoneID)
		}
		pq, err := compile(context.WithoutCancel(ctx), modules, data, c.limits.MaxRules)
		<-c.slots
		releaseZone()
		done <- result{pq, err}
	}()
	timer := time.NewTimer(c.limits.CompileTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		return &Compiled{query: r.pq}, nil
	case <-timer.C:
		return nil, fmt.Errorf("%w: compiling the policy bundle took longer than the %s limit", ErrLimit, c.limits.CompileTimeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("policy compilation abandoned: %w", ctx.Err())
	}
}

// errSuperseded: a queued background compilation whose version is no longer wanted.
var errSuperseded = errors.New("policy bundle superseded before it compiled")

func (c *Compiler) checkSize(modules map[string]string, data json.RawMessage) error {
	if len(modules) > c.limits.MaxModules {
		return fmt.Errorf("%w: policy bundle has %d modules; the limit is %d", ErrLimit, len(modules), c.limits.MaxModules)
	}
	size := len(data)
	for name, src := range modules {
		size += len(name) + len(src)
	}
	if size > c.limits.MaxBundleBytes {
		return fmt.Errorf("%w: policy bundle is %d bytes (module names, sources and data); the limit is %d", ErrLimit, size, c.limits.MaxBundleBytes)
	}
	return nil
}

// acquireZone takes the zone's turn, waiting for it when wait is set.
func (c *Compiler) acquireZone(ctx context.Context, zoneID string, wait bool) (func(), error) {
	c.mu.Lock()
	t := c.zones[zoneID]
	if t == nil {
		t = &zoneTurn{ch: make(chan struct{}, 1)}
		c.zones[zoneID] = t
	}
	t.users++
	c.mu.Unlock()
	leave := func() {
		c.mu.Lock()
		if t.users--; t.users == 0 {
			delete(c.zones, zoneID)
		}
		c.mu.Unlock()
	}
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch; leave() }, nil
	default:
	}
	if !wait {
		leave()
		return nil, fmt.Errorf("%w: a policy bundle of zone %q is already compiling; retry when it is done", ErrBusy, zoneID)
	}
	select {
	case t.ch <- struct{}{}:
		return func() { <-t.ch; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, fmt.Errorf("policy compilation abandoned: %w", ctx.Err())
	}
}
