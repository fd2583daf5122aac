package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"go.uber.org/zap"

	"github.com/caracalgw/caracal/internal/store"
)

// decisionPath is OPA's Data API path for data.caracal.authz.decision.
const decisionPath = "/v1/data/caracal/authz/decision"

// maxRemoteBody caps the answer read from a policy server: a decision is a few
// hundred bytes, and an unbounded read would let a broken server exhaust memory.
const maxRemoteBody = 1 << 20

// RemoteOptions configures NewRemote.
type RemoteOptions struct {
	// URL is the OPA server's base URL (http or https), without the /v1/data path.
	URL string
	// Timeout bounds one evaluation including the round trip; zero means DefaultTimeout.
	Timeout time.Duration
	// Client sends the requests; nil means a client that does not follow redirects
	// and gives up after Timeout.
	Client *http.Client
	// Logger receives denials (debug/info); nil discards.
	Logger *zap.Logger
}

// Remote asks an OPA server for every decision. The server holds the policy for
// all zones, so its policy must key on input.zone_id. Safe for concurrent use.
type Remote struct {
	endpoint string
	timeout  time.Duration
	client   *http.Client
	logger   *zap.Logger
}

// NewRemote checks the URL and returns a Remote engine.
func NewRemote(opts RemoteOptions) (*Remote, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("parsing policy server url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("policy server url %q: want http(s)://host[:port][/path]", opts.URL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("policy server url %q: must not carry a query or fragment", opts.URL)
	}
	u.Path = strings.TrimRight(u.Path, "/") + decisionPath
	u.RawPath = ""
	// Strict built-in errors make a built-in failure an error (a deny) on the server
	// too, so a policy behaves the same embedded and remote.
	u.RawQuery = "strict-builtin-errors=true"
	r := &Remote{
		endpoint: u.String(),
		timeout:  opts.Timeout,
		client:   opts.Client,
		logger:   opts.Logger,
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.logger == nil {
		r.logger = zap.NewNop()
	}
	if r.client == nil {
		r.client = &http.Client{
			Timeout: r.timeout,
			// A redirect would send the input document somewhere not configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return r, nil
}

// Load does nothing: the remote server manages its own policy.
func (r *Remote) Load(context.Context, string, *store.PolicyBundle) error { return nil }

// Schedule ignores bundles, as Load does.
func (r *Remote) Schedule(string, *store.PolicyBundle) {}

// Install ignores compiled bundles: the remote server has its own.
func (r *Remote) Install(string, int64, *Compiled) {}

// Version reports no bundle: versions live on the remote server.
func (r *Remote) Version(string) (int64, bool) { return 0, false }

// Evaluate posts in to the server and reads its decision. The server sees the zone
// only as input.zone_id, which must equal zoneID.
func (r *Remote) Evaluate(ctx context.Context, zoneID string, in *Input) Decision {
	d, unavailable := r.evaluate(ctx, zoneID, in)
	switch {
	case d.Allow:
	case unavailable:
		r.logger.Info("policy server unavailable; denying", zap.String("zone_id", zoneID), zap.String("reason", d.Reason))
	default:
		r.logger.Debug("policy denied", zap.String("zone_id", zoneID), zap.String("reason", d.Reason))
	}
	return d
}

// evaluate reports, besides the decision, whether the deny came from the server
// being unusable rather than from the policy.
func (r *Remote) evaluate(ctx context.Context, zoneID string, in *Input) (Decision, bool) {
	switch {
	case in == nil:
		return deny(reasonNilInput), false
	case in.ZoneID != zoneID:
		return deny(reasonZoneMismatch), false
	}
	doc, err := ast.JSON(in.value())
	if err != nil {
		return deny("encoding policy input: " + err.Error()), false
	}
	body, err := json.Marshal(map[string]any{"input": doc})
	if err != nil {
		return deny("encoding policy input: " + err.Error()), false
	}

	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.endpoint, bytes.NewReader(body))
	if err != nil {
		return deny("building policy request: " + err.Error()), true
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return deny(transportReason(ctx, "policy server unreachable")), true
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return deny("policy server returned HTTP " + strconv.Itoa(resp.StatusCode)), true
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxRemoteBody+1))
	if err != nil {
		return deny(transportReason(ctx, "reading policy server response failed")), true
	}
	if len(raw) > maxRemoteBody {
		return deny("policy server response too large"), true
	}
	return decideRemote(raw), false
}

func transportReason(ctx context.Context, fallback string) string {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "policy server timed out"
	case ctx.Err() != nil:
		return reasonCancelled
	}
	return fallback
}

// decideRemote reads OPA's Data API answer, {"result": <decision>}; a missing
// result means the decision is undefined.
func decideRemote(raw []byte) Decision {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var envelope map[string]any
	if err := dec.Decode(&envelope); err != nil || envelope == nil {
		return deny(reasonMalformed + ": policy server answer is not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return deny(reasonMalformed + ": trailing data after the policy server answer")
	}
	result, ok := envelope["result"]
	if !ok {
		return deny(reasonUndefined)
	}
	v, err := ast.InterfaceToValue(result)
	if err != nil {
		return deny(reasonMalformed)
	}
	return decide(v)
}

var _ Engine = (*Remote)(nil)
