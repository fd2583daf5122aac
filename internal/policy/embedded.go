package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
)

// DefaultTimeout bounds one evaluation when no timeout is configured (docs/protocol.md section 8).
const DefaultTimeout = 100 * time.Millisecond

// decisionQuery is the document the STS asks for.
const decisionQuery = "data.caracal.authz.decision"

var (
	authzPackage = ast.MustParseRef("data.caracal.authz")
	decisionVar  = ast.Var("decision")
)

// EmbeddedOptions configures NewEmbedded.
type EmbeddedOptions struct {
	// Timeout bounds one evaluation; zero means DefaultTimeout.
	Timeout time.Duration
	// Logger receives denials (debug/info) and compile failures (warn); nil discards.
	Logger *zap.Logger
	// Compiler compiles bundles for Load and Schedule; nil means a compiler with the
	// default limits. Share one with everything else that compiles in the process.
	Compiler *Compiler
}

// Embedded evaluates zones' bundles in-process. Each bundle is compiled once, by
// Load, Schedule or the Compiler before Install, into a prepared query; Evaluate only
// runs it and never waits for a compilation. Safe for concurrent use.
type Embedded struct {
	timeout  time.Duration
	logger   *zap.Logger
	compiler *Compiler

	mu    sync.RWMutex
	zones map[string]*zoneBundle
	// pending holds the version a background compilation is preparing per zone; the
	// zone keeps its installed bundle (or none: deny-all) until it is done.
	pending map[string]int64
}

// zoneBundle is one installed bundle version: either a prepared query or, when the
// bundle did not compile, the compile error that keeps the zone deny-all.
type zoneBundle struct {
	version int64
	// compiled holds the prepared query; nil with err set.
	compiled *Compiled
	err      error
}

// NewEmbedded returns an engine with no bundles: every zone is deny-all until Load.
func NewEmbedded(opts EmbeddedOptions) *Embedded {
	e := &Embedded{
		timeout:  opts.Timeout,
		logger:   opts.Logger,
		compiler: opts.Compiler,
		zones:    make(map[string]*zoneBundle),
		pending:  make(map[string]int64),
	}
	if e.compiler == nil {
		e.compiler = NewCompiler(CompilerOptions{})
	}
	if e.timeout <= 0 {
		e.timeout = DefaultTimeout
	}
	if e.logger == nil {
		e.logger = zap.NewNop()
	}
	return e
}

// Load compiles b for zoneID and installs it, replacing any other version, and waits
// for that (behind the zone's running compilation, if any); nil removes the zone's
// bundle. A bundle that fails to compile is installed as deny-all under its version
// (so Version reports it and reloading it does not recompile) and the compile error
// is returned. A bundle whose ZoneID names another zone removes the zone's bundle
// and returns an error. Concurrent loads for one zone are last-writer-wins. The
// request path uses Schedule instead, which never waits.
func (e *Embedded) Load(ctx context.Context, zoneID string, b *store.PolicyBundle) error {
	if err := e.checkBundle(zoneID, b); err != nil || b == nil {
		return err
	}
	e.mu.RLock()
	current := e.zones[zoneID]
	e.mu.RUnlock()
	if current != nil && current.version == b.Version {
		return current.err
	}
	c, err := e.compiler.compile(ctx, zoneID, b.Modules, b.Data, true, nil)
	if err != nil && ctx.Err() != nil {
		// The caller gave up; what is installed stays as it was.
		return err
	}
	e.install(zoneID, b.Version, c, err, false)
	return err
}

// Schedule makes b the zone's bundle without waiting for it to compile: the zone
// keeps its installed version (or, with none, stays deny-all) until the compilation,
// which runs in the Compiler's pool, is done. A version already installed or being
// compiled is not compiled again; nil removes the zone's bundle at once.
func (e *Embedded) Schedule(zoneID string, b *store.PolicyBundle) {
	if err := e.checkBundle(zoneID, b); err != nil {
		e.logger.Warn("policy bundle refused; zone is deny-all", zap.String("zone_id", zoneID), zap.Error(err))
		return
	}
	if b == nil {
		return
	}
	e.mu.Lock()
	current := e.zones[zoneID]
	if current != nil && current.version == b.Version {
		// Back to the installed version: a compilation of another one is not wanted.
		delete(e.pending, zoneID)
		e.mu.Unlock()
		return
	}
	if v, ok := e.pending[zoneID]; ok && v == b.Version {
		e.mu.Unlock()
		return
	}
	e.pending[zoneID] = b.Version
	e.mu.Unlock()
	go func() {
		wanted := func() bool {
			e.mu.RLock()
			defer e.mu.RUnlock()
			v, ok := e.pending[zoneID]
			return ok && v == b.Version
		}
		c, err := e.compiler.compile(context.Background(), zoneID, b.Modules, b.Data, true, wanted)
		if errors.Is(err, errSuperseded) {
			return
		}
		e.install(zoneID, b.Version, c, err, true)
	}()
}

// Install makes c, compiled by the Compiler, the zone's bundle under version at once
// (the Coordinator compiles an upload before storing it and installs it after). A
// background compilation still running for the zone is dropped when it ends.
func (e *Embedded) Install(zoneID string, version int64, c *Compiled) {
	e.install(zoneID, version, c, nil, false)
}

// install records a compilation's outcome. A background result (fromSchedule) is kept
// only if its version is still the one wanted; anything else supersedes a pending
// compilation, whose result is then dropped (and its memory with it).
func (e *Embedded) install(zoneID string, version int64, c *Compiled, err error, fromSchedule bool) {
	zb := &zoneBundle{version: version, compiled: c, err: err}
	if c == nil && err == nil {
		zb.err = errors.New("no compiled bundle installed")
	}
	e.mu.Lock()
	if fromSchedule {
		if v, ok := e.pending[zoneID]; !ok || v != version {
			e.mu.Unlock()
			return
		}
	}
	delete(e.pending, zoneID)
	e.zones[zoneID] = zb
	e.mu.Unlock()
	if err != nil {
		e.logger.Warn("policy bundle rejected; zone is deny-all",
			zap.String("zone_id", zoneID), zap.Int64("version", version), zap.Error(err))
		return
	}
	e.logger.Info("policy bundle loaded", zap.String("zone_id", zoneID), zap.Int64("version", version))
}

// checkBundle removes the zone's bundle when b is nil or belongs to another zone; the
// latter is an error: the zone's real policy is unknown, so it goes deny-all, without
// caching a version for it.
func (e *Embedded) checkBundle(zoneID string, b *store.PolicyBundle) error {
	if b != nil && (b.ZoneID == "" || b.ZoneID == zoneID) {
		return nil
	}
	e.remove(zoneID)
	if b == nil {
		return nil
	}
	return fmt.Errorf("policy bundle belongs to zone %q, not %q", b.ZoneID, zoneID)
}

func (e *Embedded) remove(zoneID string) {
	e.mu.Lock()
	delete(e.zones, zoneID)
	delete(e.pending, zoneID)
	e.mu.Unlock()
}

// Version reports the installed bundle version for zoneID, including a version
// that failed to compile (the zone is then deny-all).
func (e *Embedded) Version(zoneID string) (int64, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	zb := e.zones[zoneID]
	if zb == nil {
		return 0, false
	}
	return zb.version, true
}

// Evaluate runs the zone's prepared query against in under the engine's timeout.
func (e *Embedded) Evaluate(ctx context.Context, zoneID string, in *Input) Decision {
	d := e.evaluate(ctx, zoneID, in)
	if !d.Allow {
		e.logger.Debug("policy denied", zap.String("zone_id", zoneID), zap.String("reason", d.Reason))
	}
	return d
}

func (e *Embedded) evaluate(ctx context.Context, zoneID string, in *Input) Decision {
	e.mu.RLock()
	zb := e.zones[zoneID]
	_, compiling := e.pending[zoneID]
	e.mu.RUnlock()
	switch {
	case zb == nil && compiling:
		return deny(reasonCompiling)
	case zb == nil:
		return deny(reasonNoBundle)
	case zb.err != nil:
		return deny(reasonCompileFailure + ": " + zb.err.Error())
	case in == nil:
		return deny(reasonNilInput)
	case in.ZoneID != zoneID:
		return deny(reasonZoneMismatch)
	case ctx.Err() != nil:
		// Cancellation reaches OPA asynchronously, so a short policy could still
		// finish for a caller that has already gone.
		return deny(reasonCancelled)
	}

	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	// OPA would otherwise start a goroutine per evaluation to watch ctx; AfterFunc
	// registers a callback instead, which costs less on the hot path.
	abort := topdown.NewCancel()
	stop := context.AfterFunc(ctx, abort.Cancel)
	defer stop()

	opts := []rego.EvalOption{
		rego.EvalParsedInput(in.value()),
		rego.EvalExternalCancel(abort),
		rego.EvalMetrics(metrics.NoOp()),
		// Hand back the result term as-is; decide reads AST values, so converting
		// to Go maps and back would be wasted work.
		rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }),
	}
	if in.Time != 0 {
		// io.jwt.decode_verify checks exp and nbf against input.time, the STS's clock
		// (time.now_ns is not offered to policies).
		opts = append(opts, rego.EvalTime(time.Unix(in.Time, 0)))
	}
	rs, err := zb.compiled.query.Eval(ctx, opts...)
	if err != nil {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			e.logger.Info("policy evaluation timed out", zap.String("zone_id", zoneID), zap.Duration("timeout", e.timeout))
			return deny(reasonTimeout)
		case ctx.Err() != nil:
			return deny(reasonCancelled)
		}
		e.logger.Info("policy evaluation failed", zap.String("zone_id", zoneID), zap.Error(err))
		return deny("policy evaluation failed: " + err.Error())
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return deny(reasonUndefined)
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return deny(reasonMalformed)
	}
	return decide(t.Value)
}

// Validate checks modules and data as Load would (the sandbox's built-ins, the
// default size, module and rule limits) and reports why they would leave a zone
// deny-all. It compiles in the caller, outside any Compiler's pool and time limit.
func Validate(ctx context.Context, modules map[string]string, data json.RawMessage) error {
	if err := defaultLimitsCompiler.checkSize(modules, data); err != nil {
		return err
	}
	_, err := compile(ctx, modules, data, defaultLimitsCompiler.limits.MaxRules)
	return err
}

// defaultLimitsCompiler only carries the default limits for Validate.
var defaultLimitsCompiler = NewCompiler(CompilerOptions{})

// compile parses the modules as Rego v1, refuses calls of denied built-ins and more
// than maxRules rules, checks that they define data.caracal.authz.decision, mounts
// data at data.caracal.zone in a private in-memory store and prepares the decision
// query under the sandbox's capabilities.
func compile(ctx context.Context, modules map[string]string, data json.RawMessage, maxRules int) (rego.PreparedEvalQuery, error) {
	var none rego.PreparedEvalQuery
	if len(modules) == 0 {
		return none, errors.New("policy bundle has no modules")
	}
	caps := capabilities()
	opts := make([]func(*rego.Rego), 0, len(modules)+5)
	definesDecision := false
	rules := 0
	// Sorted so that, with several broken modules, the same one is reported each time.
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		m, err := ast.ParseModuleWithOpts(name, modules[name], ast.ParserOptions{
			RegoVersion:  ast.RegoV1,
			Capabilities: caps,
		})
		if err != nil {
			return none, fmt.Errorf("parsing module %q: %w", name, err)
		}
		if rules += countRules(m); rules > maxRules {
			return none, fmt.Errorf("%w: policy bundle has more than %d rules", ErrLimit, maxRules)
		}
		if err := checkDeniedCalls(name, m); err != nil {
			return none, err
		}
		definesDecision = definesDecision || declaresDecision(m)
		opts = append(opts, rego.ParsedModule(m))
	}
	if !definesDecision {
		return none, errors.New("no module defines decision in package caracal.authz")
	}
	zone, err := parseData(data)
	if err != nil {
		return none, err
	}
	root := ast.NewObject(ast.Item(ast.StringTerm("caracal"), ast.NewTerm(ast.NewObject(
		ast.Item(ast.StringTerm("zone"), ast.NewTerm(zone)),
	))))
	opts = append(opts,
		rego.Query(decisionQuery),
		rego.Store(inmem.NewFromASTObject(root)),
		rego.Capabilities(caps),
		rego.SetRegoVersion(ast.RegoV1),
		// A built-in error (a bad type, a failed parse) fails the evaluation, which
		// is a deny, instead of quietly making an expression undefined, which under
		// `not` could turn into an allow.
		rego.StrictBuiltinErrors(true),
	)
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return none, fmt.Errorf("compiling policy bundle: %w", err)
	}
	return pq, nil
}

// countRules counts m's rules, else branches included.
func countRules(m *ast.Module) int {
	n := 0
	for _, r := range m.Rules {
		for ; r != nil; r = r.Else {
			n++
		}
	}
	return n
}

func declaresDecision(m *ast.Module) bool {
	if !m.Package.Path.Equal(authzPackage) {
		return false
	}
	for _, r := range m.Rules {
		if ref := r.Head.Ref(); len(ref) > 0 && ref[0].Value.Compare(decisionVar) == 0 {
			return true
		}
	}
	return false
}

// parseData reads the bundle's data document, which must be a JSON object; an
// empty document is an empty object (a bundle need not carry data).
func parseData(data json.RawMessage) (ast.Object, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return ast.NewObject(), nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing data document: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parsing data document: trailing data after the JSON object")
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, errors.New("data document must be a JSON object")
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		return nil, fmt.Errorf("converting data document: %w", err)
	}
	return v.(ast.Object), nil
}

var _ Engine = (*Embedded)(nil)
