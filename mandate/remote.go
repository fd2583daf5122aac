package mandate

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	josejson "github.com/go-jose/go-jose/v4/json"
)

// Defaults of RemoteOptions.
const (
	DefaultRemoteMaxBytes   = 64 << 10
	DefaultRemoteMinRefresh = 30 * time.Second
	DefaultRemoteMaxAge     = time.Hour
	// DefaultRemoteRetry is the first delay before a failed fetch is retried; it doubles
	// per consecutive failure up to MinRefresh.
	DefaultRemoteRetry   = time.Second
	defaultRemoteTimeout = 5 * time.Second
	// maxRevokedKIDs bounds the kids a RemoteKeys refuses after a revocation.
	maxRevokedKIDs = 1024
	// fetchTimeout bounds one refresh (discovery plus key set) even with a caller's client that has
	// no timeout, so a hung server cannot hold the single flight forever.
	fetchTimeout = 15 * time.Second
)

// RemoteOptions configures RemoteKeys.
type RemoteOptions struct {
	// Issuer is the pinned zone issuer URL. Its RFC 8414 metadata is read from
	// {scheme://host}/.well-known/oauth-authorization-server{path}; the metadata's issuer must be
	// exactly this value, and its jwks_uri names the key set. https is required except on loopback.
	Issuer string
	// Client makes the requests. Default: 5 s timeout and no redirects followed.
	Client *http.Client
	// MaxBytes bounds each document. Default 64 KiB.
	MaxBytes int64
	// MinRefresh is the shortest time between two fetches (default 30 s) and MaxAge the longest time
	// a key set is used before it is refreshed (default 1 h). The key set's Cache-Control max-age is
	// honoured within these bounds; without one, the set is refreshed after MinRefresh.
	MinRefresh, MaxAge time.Duration
	// Retry is the delay before a failed or refused fetch may run again (default 1 s);
	// it doubles with each consecutive failure, up to MinRefresh. The MinRefresh limit
	// between fetches for an unknown kid applies only after a fetch succeeded.
	Retry time.Duration
	// OnFetch, when set, is called after every fetch with its outcome (nil on success)
	// and, after a failure, the delay before the next attempt may run. Use FetchCause to
	// classify the error for logs and metrics. Calls never overlap; the callers waiting
	// for the fetch resume once it returns, so it must not block.
	OnFetch func(err error, retryIn time.Duration)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// FetchError is a failed or refused fetch of the metadata or the key set.
type FetchError struct {
	// URL is the document that could not be fetched.
	URL string
	// Cause is one of: dns, refused, timeout, x509, tls, network, status, body, metadata.
	Cause string
	// Err is what went wrong.
	Err error
}

// Error names the document, the cause and the underlying error.
func (e *FetchError) Error() string { return e.URL + ": " + e.Cause + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FetchError) Unwrap() error { return e.Err }

// FetchCause returns the Cause of the FetchError in err's chain, "other" without one.
func FetchCause(err error) string {
	var fe *FetchError
	if errors.As(err, &fe) {
		return fe.Cause
	}
	return "other"
}

// transportCause classifies an error of http.Client.Do.
func transportCause(err error) string {
	var (
		dnsErr     *net.DNSError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
		recordErr  tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &verifyErr), errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalidErr):
		return "x509"
	case errors.As(err, &recordErr):
		return "tls"
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timeout"
	}
	return "network"
}

// RemoteKeys is a KeySource that fetches a zone's JWKS over HTTP and caches it. A kid that is not
// in the cached set causes at most one fetch per MinRefresh, shared by all concurrent callers; a
// known kid is answered from the cache and, once the set is older than its max-age, a refresh runs in
// the background. When a fetch fails the last good key set stays in use and the next fetch may run
// after a backoff (Retry, doubling up to MinRefresh) instead of MinRefresh, so a gateway started
// before its STS serves soon after the STS is up. Revoked kids are refused at once.
type RemoteKeys struct {
	issuer      string
	metadataURL string
	client      *http.Client
	maxBytes    int64
	minRefresh  time.Duration
	maxAge      time.Duration
	retry       time.Duration
	onFetch     func(error, time.Duration)
	now         func() time.Time

	mu          sync.Mutex
	keys        KeySet    // last good key set; nil until a fetch succeeds
	expires     time.Time // when keys should be refreshed
	lastAttempt time.Time // start of the latest fetch; zero before the first
	jwksURI     string    // from the metadata; cleared when a fetch fails so the next one rediscovers
	lastErr     error     // outcome of the latest fetch
	failures    int       // consecutive failed fetches
	retryAt     time.Time // after a failure, when the next fetch may start
	flight      *flight   // the fetch in progress, if any
	revoked     map[string]bool
	generation  atomic.Uint64 // bumped whenever a kid leaves the set
}

// flight is one fetch shared by everybody who needs it.
type flight struct {
	done chan struct{}
	err  error
}

// NewRemoteKeys validates the options. It does not fetch: the first Key call (or Refresh) does.
func NewRemoteKeys(opts RemoteOptions) (*RemoteKeys, error) {
	u, err := checkFetchURL(opts.Issuer)
	if err != nil {
		return nil, fmt.Errorf("mandate: remote keys issuer: %w", err)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("mandate: remote keys issuer must not carry a query, fragment or user info")
	}
	meta := *u
	meta.Path = "/.well-known/oauth-authorization-server" + strings.TrimSuffix(u.Path, "/")
	meta.RawPath = ""

	r := &RemoteKeys{
		issuer:      opts.Issuer,
		metadataURL: meta.String(),
		client:      opts.Client,
		maxBytes:    opts.MaxBytes,
		minRefresh:  opts.MinRefresh,
		maxAge:      opts.MaxAge,
		retry:       opts.Retry,
		onFetch:     opts.OnFetch,
		now:         opts.Now,
		revoked:     map[string]bool{},
	}
	if r.retry <= 0 {
		r.retry = DefaultRemoteRetry
	}
	if r.client == nil {
		r.client = &http.Client{
			Timeout: defaultRemoteTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if r.maxBytes <= 0 {
		r.maxBytes = DefaultRemoteMaxBytes
	}
	if r.minRefresh <= 0 {
		r.minRefresh = DefaultRemoteMinRefresh
	}
	if r.maxAge <= 0 {
		r.maxAge = DefaultRemoteMaxAge
	}
	if r.maxAge < r.minRefresh {
		return nil, errors.New("mandate: remote keys max age is shorter than the minimum refresh interval")
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r, nil
}

// checkFetchURL accepts absolute http(s) URLs, and plain http only towards a loopback host: key
// material fetched in clear text from elsewhere could be replaced on the way.
func checkFetchURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing url: %w", err)
	}
	if u.Host == "" {
		return nil, errors.New("url is not absolute")
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, errors.New("url must use https unless the host is loopback")
		}
	default:
		return nil, errors.New("url scheme must be https")
	}
	return u, nil
}

// Key returns the zone key with the given kid.
func (r *RemoteKeys) Key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	r.mu.Lock()
	now := r.now()
	if r.revoked[kid] {
		r.mu.Unlock()
		return nil, fail(ErrUnknownKey, "kid was revoked by the zone")
	}
	if k, ok := r.keys[kid]; ok {
		if !now.Before(r.expires) {
			r.startLocked(now, false)
		}
		r.mu.Unlock()
		return k, nil
	}
	f := r.startLocked(now, false)
	if f == nil {
		err := r.missLocked()
		r.mu.Unlock()
		return nil, err
	}
	r.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("mandate: waiting for the key set of %s: %w", r.issuer, ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if k, ok := r.keys[kid]; ok {
		return k, nil
	}
	return nil, r.missLocked()
}

// Refresh fetches the key set now, or waits for the fetch already running, and returns its error.
// It ignores MinRefresh; use it to warm the cache or to check the configuration at start-up.
func (r *RemoteKeys) Refresh(ctx context.Context) error {
	r.mu.Lock()
	f := r.startLocked(r.now(), true)
	r.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return fmt.Errorf("mandate: waiting for the key set of %s: %w", r.issuer, ctx.Err())
	}
}

// Revoke makes the kids unknown at once, whatever a key set fetched later says (a cache
// between here and the STS may still serve them), and refetches the key set. The
// zone's emergency rotation calls it through the caracal.keys stream.
func (r *RemoteKeys) Revoke(kids ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, kid := range kids {
		if len(r.revoked) >= maxRevokedKIDs {
			break
		}
		r.revoked[kid] = true
		if _, ok := r.keys[kid]; ok {
			delete(r.keys, kid)
			r.generation.Add(1)
		}
	}
	r.startLocked(r.now(), true)
}

// Refetch starts a fetch now, whatever the age of the key set (a rotation published a
// next key); it does not wait for the outcome.
func (r *RemoteKeys) Refetch() {
	r.mu.Lock()
	r.startLocked(r.now(), true)
	r.mu.Unlock()
}

// KeyGeneration implements KeyGenerations: it changes whenever a kid left the key set,
// revoked or missing from a fresh fetch.
func (r *RemoteKeys) KeyGeneration() uint64 { return r.generation.Load() }

// Prefetch fetches the key set until a fetch succeeds or ctx ends, waiting the backoff
// delay between attempts, so that a verifier started before its issuer is up reports
// the failures and has keys as soon as the issuer answers. It returns at once when a
// key set was fetched already.
func (r *RemoteKeys) Prefetch(ctx context.Context) {
	for {
		r.mu.Lock()
		done := r.keys != nil
		f := r.startLocked(r.now(), false)
		r.mu.Unlock()
		if done {
			return
		}
		if f != nil {
			select {
			case <-f.done:
				if f.err == nil {
					return
				}
				continue
			case <-ctx.Done():
				return
			}
		}
		r.mu.Lock()
		wait := max(r.retryAt.Sub(r.now()), 10*time.Millisecond)
		r.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// missLocked is the answer for a kid that is not in the cache: unknown when we hold a key set,
// unavailable when we never managed to fetch one.
func (r *RemoteKeys) missLocked() error {
	if r.keys == nil {
		e := fail(ErrKeysUnavailable, "no key set fetched from "+r.issuer)
		e.Err = r.lastErr
		return e
	}
	return ErrUnknownKey
}

// startLocked returns the fetch in progress, or starts one unless it is too early: after
// a success, until MinRefresh after the previous start; after a failure, until the
// backoff delay passed (force skips both). It returns nil when no fetch may run.
func (r *RemoteKeys) startLocked(now time.Time, force bool) *flight {
	if r.flight != nil {
		return r.flight
	}
	if !force && !r.lastAttempt.IsZero() {
		if r.failures > 0 && now.Before(r.retryAt) {
			return nil
		}
		if r.failures == 0 && now.Sub(r.lastAttempt) < r.minRefresh {
			return nil
		}
	}
	r.lastAttempt = now
	f := &flight{done: make(chan struct{})}
	r.flight = f
	jwksURI := r.jwksURI
	// The fetch has its own context: a caller that gives up must not abort the fetch the others
	// are waiting for.
	go r.fetch(f, jwksURI)
	return f
}

// fetch runs one refresh and publishes its outcome.
func (r *RemoteKeys) fetch(f *flight, jwksURI string) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()

	var (
		set    KeySet
		maxAge time.Duration
		err    error
	)
	if jwksURI == "" {
		jwksURI, err = r.discover(ctx)
	}
	if err == nil {
		set, maxAge, err = r.fetchJWKS(ctx, jwksURI)
	}

	r.mu.Lock()
	var retryIn time.Duration
	if err != nil {
		r.jwksURI = ""
		r.failures++
		retryIn = r.minRefresh
		if r.failures <= 16 {
			retryIn = min(r.retry<<(r.failures-1), r.minRefresh)
		}
		r.retryAt = r.lastAttempt.Add(retryIn)
	} else {
		for kid := range set {
			if r.revoked[kid] {
				delete(set, kid)
			}
		}
		for kid := range r.keys {
			if _, ok := set[kid]; !ok {
				r.generation.Add(1)
				break
			}
		}
		r.keys = set
		r.expires = r.now().Add(maxAge)
		r.jwksURI = jwksURI
		r.failures = 0
	}
	r.lastErr = err
	f.err = err
	r.mu.Unlock()
	// While the flight is still in progress: the waiters wake after it, and no other
	// fetch starts before it returned.
	if r.onFetch != nil {
		r.onFetch(err, retryIn)
	}
	r.mu.Lock()
	r.flight = nil
	r.mu.Unlock()
	close(f.done)
}

// discover reads the RFC 8414 metadata and returns the jwks_uri.
func (r *RemoteKeys) discover(ctx context.Context) (string, error) {
	body, _, err := r.get(ctx, r.metadataURL)
	if err != nil {
		return "", fmt.Errorf("mandate: reading metadata of %s: %w", r.issuer, err)
	}
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := josejson.Unmarshal(body, &meta); err != nil {
		return "", fmt.Errorf("mandate: parsing metadata of %s: %w", r.issuer, &FetchError{URL: r.metadataURL, Cause: "body", Err: err})
	}
	if meta.Issuer != r.issuer {
		return "", fmt.Errorf("mandate: metadata of %s: %w", r.issuer, &FetchError{URL: r.metadataURL, Cause: "metadata", Err: fmt.Errorf("names issuer %q", meta.Issuer)})
	}
	if _, err := checkFetchURL(meta.JWKSURI); err != nil {
		return "", fmt.Errorf("mandate: metadata of %s: %w", r.issuer, &FetchError{URL: r.metadataURL, Cause: "metadata", Err: fmt.Errorf("jwks_uri: %w", err)})
	}
	return meta.JWKSURI, nil
}

// fetchJWKS reads and parses the key set and works out how long it may be cached.
func (r *RemoteKeys) fetchJWKS(ctx context.Context, uri string) (KeySet, time.Duration, error) {
	body, header, err := r.get(ctx, uri)
	if err != nil {
		return nil, 0, fmt.Errorf("mandate: reading key set of %s: %w", r.issuer, err)
	}
	set, err := ParseJWKS(body)
	if err != nil {
		return nil, 0, fmt.Errorf("mandate: key set of %s: %w", r.issuer, &FetchError{URL: uri, Cause: "body", Err: err})
	}
	age, ok := cacheMaxAge(header.Values("Cache-Control"))
	if !ok {
		age = r.minRefresh
	}
	return set, min(max(age, r.minRefresh), r.maxAge), nil
}

// get fetches one document of at most maxBytes with status 200.
func (r *RemoteKeys) get(ctx context.Context, uri string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, nil, &FetchError{URL: uri, Cause: transportCause(err), Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, &FetchError{URL: uri, Cause: "status", Err: fmt.Errorf("answered status %d", resp.StatusCode)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.maxBytes+1))
	if err != nil {
		return nil, nil, &FetchError{URL: uri, Cause: transportCause(err), Err: fmt.Errorf("reading the body: %w", err)}
	}
	if int64(len(body)) > r.maxBytes {
		return nil, nil, &FetchError{URL: uri, Cause: "body", Err: fmt.Errorf("larger than %d bytes", r.maxBytes)}
	}
	return body, resp.Header, nil
}

// cacheMaxAge extracts max-age from Cache-Control; no-store and no-cache count as zero.
func cacheMaxAge(values []string) (time.Duration, bool) {
	var (
		age   time.Duration
		found bool
	)
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0, true
			case "max-age":
				n, err := strconv.ParseUint(strings.Trim(arg, `"`), 10, 63)
				// RFC 9111 section 1.2.2: a delta-seconds too large to represent means "very long".
				if errors.Is(err, strconv.ErrRange) {
					n, err = math.MaxInt64, nil
				}
				if err != nil {
					continue
				}
				// Anything beyond MaxAge is clamped later; capping here only keeps the product in range.
				age, found = time.Duration(min(n, uint64(math.MaxInt64/time.Second)))*time.Second, true
			}
		}
	}
	return age, found
}
