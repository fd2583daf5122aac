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

// DefaultTimeout bounds one evaluation when no timeout is configured (SPEC.md section 8).
const DefaultTimeout = 100 * time.Millisecond

// decisionQuery is the document the STS asks for.
const decisionQuery = "data.caracal.authz.decision"

var (
	authzPackage = ast.MustParseRef("data.caracal.authz")
	decisionVar  = ast.Var("decision")
)

// deniedBuiltins are built-ins a zone's policy may not call. Bundles are uploaded by
// zone administrators and run inside the gateway: network access from policy would
// let one zone probe the gateway's network (and stall the token endpoint on I/O).
var deniedBuiltins = []string{"http.send", "net.lookup_ip_addr"}

// capabilities is OPA's built-in set for this version minus deniedBuiltins, so a
// bundle calling one of them fails to compile instead of failing at request time.
var capabilities = sync.OnceValue(func() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		return slices.Contains(deniedBuiltins, b.Name)
	})
	return c
})

// EmbeddedOptions configures NewEmbedded.
type EmbeddedOptions struct {
	// Timeout bounds one evaluation; zero means DefaultTimeout.
	Timeout time.Duration
	// Logger receives denials (debug/info) and compile failures (warn); nil discards.
	Logger *zap.Logger
}

// Embedded evaluates zones' bundles in-process. Each bundle is compiled once, on
// Load, into a prepared query; Evaluate only runs it. Safe for concurrent use.
type Embedded struct {
	timeout time.Duration
	logger  *zap.Logger

	mu    sync.RWMutex
	zones map[string]*zoneBundle
}

// zoneBundle is one installed bundle version: either a prepared query or, when the
// bundle did not compile, the compile error that keeps the zone deny-all.
type zoneBundle struct {
	version int64
	query   rego.PreparedEvalQuery
	err     error
}

// NewEmbedded returns an engine with no bundles: every zone is deny-all until Load.
func NewEmbedded(opts EmbeddedOptions) *Embedded {
	e := &Embedded{
		timeout: opts.Timeout,
		logger:  opts.Logger,
		zones:   make(map[string]*zoneBundle),
	}
	if e.timeout <= 0 {
		e.timeout = DefaultTimeout
	}
	if e.logger == nil {
		e.logger = zap.NewNop()
	}
	return e
}

// Load installs b for zoneID, replacing any other version; nil removes the zone's
// bundle. A bundle that fails to compile is installed as deny-all under its version
// (so Version reports it and reloading it does not recompile) and the compile error
// is returned. A bundle whose ZoneID names another zone removes the zone's bundle
// and returns an error. Concurrent loads for one zone are last-writer-wins.
func (e *Embedded) Load(ctx context.Context, zoneID string, b *store.PolicyBundle) error {
	if b == nil {
		e.remove(zoneID)
		return nil
	}
	if b.ZoneID != "" && b.ZoneID != zoneID {
		// The caller fetched the wrong zone's bundle: the zone's real policy is
		// unknown, so it goes deny-all, without caching a version for it.
		e.remove(zoneID)
		return fmt.Errorf("policy bundle belongs to zone %q, not %q", b.ZoneID, zoneID)
	}
	e.mu.RLock()
	current := e.zones[zoneID]
	e.mu.RUnlock()
	if current != nil && current.version == b.Version {
		return current.err
	}

	zb := &zoneBundle{version: b.Version}
	zb.query, zb.err = compile(ctx, b.Modules, b.Data)
	e.mu.Lock()
	e.zones[zoneID] = zb
	e.mu.Unlock()
	if zb.err != nil {
		e.logger.Warn("policy bundle rejected; zone is deny-all",
			zap.String("zone_id", zoneID), zap.Int64("version", b.Version), zap.Error(zb.err))
		return zb.err
	}
	e.logger.Info("policy bundle loaded", zap.String("zone_id", zoneID), zap.Int64("version", b.Version))
	return nil
}

func (e *Embedded) remove(zoneID string) {
	e.mu.Lock()
	delete(e.zones, zoneID)
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
	e.mu.RUnlock()
	switch {
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
		// time.now_ns() agrees with input.time, which the STS takes from its clock.
		opts = append(opts, rego.EvalTime(time.Unix(in.Time, 0)))
	}
	rs, err := zb.query.Eval(ctx, opts...)
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

// Validate compiles modules and data exactly as Load would and reports why they
// would leave a zone deny-all; the Coordinator calls it before storing an upload.
func Validate(ctx context.Context, modules map[string]string, data json.RawMessage) error {
	_, err := compile(ctx, modules, data)
	return err
}

// compile parses the modules as Rego v1, checks that they define
// data.caracal.authz.decision, mounts data at data.caracal.zone in a private
// in-memory store and prepares the decision query.
func compile(ctx context.Context, modules map[string]string, data json.RawMessage) (rego.PreparedEvalQuery, error) {
	var none rego.PreparedEvalQuery
	if len(modules) == 0 {
		return none, errors.New("policy bundle has no modules")
	}
	caps := capabilities()
	opts := make([]func(*rego.Rego), 0, len(modules)+5)
	definesDecision := false
	// Sorted so that, with several broken modules, the same one is reported each time.
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		m, err := ast.ParseModuleWithOpts(name, modules[name], ast.ParserOptions{
			RegoVersion:  ast.RegoV1,
			Capabilities: caps,
		})
		if err != nil {
			return none, fmt.Errorf("parsing module %q: %w", name, err)
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
