// Package policy is the STS's policy gate (docs/protocol.md section 8): it evaluates
// data.caracal.authz.decision for a zone, either in-process against the zone's
// compiled bundle (Embedded) or against a remote OPA server (Remote). Every failure
// is a deny: a missing bundle, a compile error, an evaluation error, a timeout, an
// unreachable server and any result whose shape is not exactly that of
// docs/protocol.md section 8.
package policy

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/caracalgw/caracal/internal/store"
)

// The actions the STS evaluates: a token exchange, and a client_credentials grant that
// names a resource (the session is created and the resource mandate issued in one step);
// docs/protocol.md section 8.
const (
	ActionTokenExchange     = "token_exchange"
	ActionClientCredentials = "client_credentials"
)

// Input is docs/protocol.md section 8's input document. The JSON names are the wire
// contract a remote OPA server sees; the embedded engine builds the identical
// document directly as an AST value.
type Input struct {
	ZoneID          string      `json:"zone_id"`
	Action          string      `json:"action"`
	Client          Client      `json:"client"`
	Session         Session     `json:"session"`
	Resource        Resource    `json:"resource"`
	RequestedScopes []string    `json:"requested_scopes"`
	Delegation      *Delegation `json:"delegation"`
	Time            int64       `json:"time"`
}

// Client identifies the application presenting the subject token.
type Client struct {
	ID string `json:"id"`
}

// Session is the subject session and the root of its delegation path.
type Session struct {
	SID     string `json:"sid"`
	RootSID string `json:"root_sid"`
}

// Resource is the target resource and its declared scopes.
type Resource struct {
	Identifier string   `json:"identifier"`
	Scopes     []string `json:"scopes"`
}

// Delegation describes the edge an exchange runs under; nil when there is none.
type Delegation struct {
	EdgeID       string   `json:"edge_id"`
	Path         []string `json:"path"`
	HopCount     int      `json:"hop_count"`
	Scopes       []string `json:"scopes"`
	ExpiresAt    int64    `json:"expires_at"`
	Epoch        int64    `json:"epoch"`
	RootClientID string   `json:"root_client_id"`
}

// Decision is the outcome of one evaluation.
//
// Allow is true only for a result object with "decision":"allow" and
// "evaluation_status":"complete". Reason is a short explanation of a deny, fit for
// an OAuth error_description and a log line. When the result carries a "scopes"
// array of strings, HasScopes is true and Scopes holds it: the STS then issues only
// the requested scopes that are also in Scopes.
type Decision struct {
	Allow     bool
	Reason    string
	Reasons   []string
	Scopes    []string
	HasScopes bool
}

// Engine evaluates data.caracal.authz.decision for a zone.
type Engine interface {
	// Evaluate never returns an error: every failure is a deny with a Reason.
	Evaluate(ctx context.Context, zoneID string, in *Input) Decision
	// Load installs (compiles) the zone's bundle and waits for it; a nil bundle
	// removes it (deny-all). A bundle that fails to compile leaves the zone deny-all
	// (with that reason) and returns the error. Loading the version already installed
	// is a cheap no-op. Remote engines ignore bundles and return nil.
	Load(ctx context.Context, zoneID string, b *store.PolicyBundle) error
	// Schedule is Load without waiting: the zone keeps its installed version (or stays
	// deny-all) until b has compiled. The request path calls it.
	Schedule(zoneID string, b *store.PolicyBundle)
	// Install makes a bundle compiled by a Compiler the zone's bundle under version.
	Install(zoneID string, version int64, c *Compiled)
	// Version reports the installed bundle version for the zone (0, false if none).
	Version(zoneID string) (int64, bool)
}

// Deny reasons shared by both engines.
const (
	reasonNoBundle       = "no active policy bundle for zone"
	reasonCompiling      = "policy bundle of zone is still compiling"
	reasonTimeout        = "policy evaluation timed out"
	reasonCancelled      = "policy evaluation cancelled"
	reasonUndefined      = "policy result undefined"
	reasonMalformed      = "policy result malformed"
	reasonIncomplete     = "policy evaluation incomplete"
	reasonDenied         = "policy denied"
	reasonNilInput       = "policy input missing"
	reasonZoneMismatch   = "policy input is for another zone"
	reasonCompileFailure = "policy bundle failed to compile"
)

// maxReasonLen bounds Reason: a policy controls its reasons, and Reason ends up in
// a response body and a log line.
const maxReasonLen = 512

func deny(reason string) Decision {
	return Decision{Reason: truncate(reason)}
}

func truncate(s string) string {
	if len(s) <= maxReasonLen {
		return s
	}
	cut := maxReasonLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// Result object keys, built once: they are compared against on every evaluation.
var (
	keyDecision = ast.StringTerm("decision")
	keyStatus   = ast.StringTerm("evaluation_status")
	keyReasons  = ast.StringTerm("reasons")
	keyScopes   = ast.StringTerm("scopes")
)

// decide turns the value of data.caracal.authz.decision into a Decision. Both
// engines go through it so a result means the same thing embedded and remote.
// Sets are accepted where arrays are expected because a Rego set serialises to a
// JSON array; that keeps `reasons contains msg if ...` policies portable.
func decide(v ast.Value) Decision {
	obj, ok := v.(ast.Object)
	if !ok {
		return deny(reasonMalformed + ": not an object")
	}
	verdict, ok := stringMember(obj, keyDecision)
	if !ok || (verdict != "allow" && verdict != "deny") {
		return deny(reasonMalformed + `: "decision" must be "allow" or "deny"`)
	}
	var d Decision
	if t := obj.Get(keyReasons); t != nil {
		if d.Reasons, ok = stringList(t.Value); !ok {
			return deny(reasonMalformed + `: "reasons" must be an array of strings`)
		}
	}
	if t := obj.Get(keyScopes); t != nil {
		if d.Scopes, ok = stringList(t.Value); !ok {
			return deny(reasonMalformed + `: "scopes" must be an array of strings`)
		}
		d.HasScopes = true
	}
	if verdict == "deny" {
		d.Reason = reasonDenied
		if len(d.Reasons) > 0 {
			d.Reason += ": " + strings.Join(d.Reasons, "; ")
		}
		d.Reason = truncate(d.Reason)
		return d
	}
	if status, _ := stringMember(obj, keyStatus); status != "complete" {
		d.Reason = truncate(reasonIncomplete + " (evaluation_status " + strconv.Quote(status) + ")")
		return d
	}
	d.Allow = true
	return d
}

func stringMember(obj ast.Object, key *ast.Term) (string, bool) {
	t := obj.Get(key)
	if t == nil {
		return "", false
	}
	s, ok := t.Value.(ast.String)
	return string(s), ok
}

func stringList(v ast.Value) ([]string, bool) {
	var out []string
	ok := true
	collect := func(t *ast.Term) bool {
		s, isString := t.Value.(ast.String)
		if !isString {
			ok = false
			return true
		}
		out = append(out, string(s))
		return false
	}
	switch c := v.(type) {
	case *ast.Array:
		out = make([]string, 0, c.Len())
		c.Until(collect)
	case ast.Set:
		out = make([]string, 0, c.Len())
		c.Until(collect)
	default:
		return nil, false
	}
	return out, ok
}

// Input document keys, built once for the same reason as the result keys.
var (
	keyZoneID          = ast.StringTerm("zone_id")
	keyAction          = ast.StringTerm("action")
	keyClient          = ast.StringTerm("client")
	keyID              = ast.StringTerm("id")
	keySession         = ast.StringTerm("session")
	keySID             = ast.StringTerm("sid")
	keyRootSID         = ast.StringTerm("root_sid")
	keyResource        = ast.StringTerm("resource")
	keyIdentifier      = ast.StringTerm("identifier")
	keyRequestedScopes = ast.StringTerm("requested_scopes")
	keyDelegation      = ast.StringTerm("delegation")
	keyEdgeID          = ast.StringTerm("edge_id")
	keyPath            = ast.StringTerm("path")
	keyHopCount        = ast.StringTerm("hop_count")
	keyExpiresAt       = ast.StringTerm("expires_at")
	keyEpoch           = ast.StringTerm("epoch")
	keyRootClientID    = ast.StringTerm("root_client_id")
	keyTime            = ast.StringTerm("time")
)

// value builds the input document as an AST object. It is the same document
// encoding/json would produce from the struct tags except that nil slices become
// empty arrays rather than null, so policies can iterate them without guards.
func (in *Input) value() ast.Object {
	var delegation *ast.Term
	if d := in.Delegation; d == nil {
		delegation = ast.InternedNullTerm
	} else {
		delegation = ast.NewTerm(ast.NewObject(
			ast.Item(keyEdgeID, ast.StringTerm(d.EdgeID)),
			ast.Item(keyPath, stringArray(d.Path)),
			ast.Item(keyHopCount, intTerm(int64(d.HopCount))),
			ast.Item(keyScopes, stringArray(d.Scopes)),
			ast.Item(keyExpiresAt, intTerm(d.ExpiresAt)),
			ast.Item(keyEpoch, intTerm(d.Epoch)),
			ast.Item(keyRootClientID, ast.StringTerm(d.RootClientID)),
		))
	}
	return ast.NewObject(
		ast.Item(keyZoneID, ast.StringTerm(in.ZoneID)),
		ast.Item(keyAction, ast.StringTerm(in.Action)),
		ast.Item(keyClient, ast.NewTerm(ast.NewObject(
			ast.Item(keyID, ast.StringTerm(in.Client.ID)),
		))),
		ast.Item(keySession, ast.NewTerm(ast.NewObject(
			ast.Item(keySID, ast.StringTerm(in.Session.SID)),
			ast.Item(keyRootSID, ast.StringTerm(in.Session.RootSID)),
		))),
		ast.Item(keyResource, ast.NewTerm(ast.NewObject(
			ast.Item(keyIdentifier, ast.StringTerm(in.Resource.Identifier)),
			ast.Item(keyScopes, stringArray(in.Resource.Scopes)),
		))),
		ast.Item(keyRequestedScopes, stringArray(in.RequestedScopes)),
		ast.Item(keyDelegation, delegation),
		ast.Item(keyTime, intTerm(in.Time)),
	)
}

func stringArray(ss []string) *ast.Term {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(terms...)
}

func intTerm(n int64) *ast.Term {
	return ast.NumberTerm(json.Number(strconv.FormatInt(n, 10)))
}
