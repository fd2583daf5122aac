package mandate

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	josejson "github.com/go-jose/go-jose/v4/json"
)

// Defaults of RemoteOptions.
const (
	DefaultRemoteMaxBytes   = 64 << 10
	DefaultRemoteMinRefresh = 30 * time.Second
	DefaultRemoteMaxAge     = time.Hour
	defaultRemoteTimeout    = 5 * time.Second
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
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// RemoteKeys is a KeySource that fetches a zone's JWKS over HTTP and caches it. A kid that is not
// in the cached set causes at most one fetch per MinRefresh, shared by all concurrent callers; a
// known kid is answered from the cache and, once the set is older than its max-age, a refresh runs in
// the background. When a fetch fails the last good key set stays in use.
type RemoteKeys struct {
	issuer      string
	metadataURL string
	client      *http.Client
	maxBytes    int64
	minRefresh  time.Duration
	maxAge      time.Duration
	now         func() time.Time

	mu          sync.Mutex
	keys        KeySet    // last good key set; nil until a fetch succeeds
	expires     time.Time // when keys should be refreshed
	lastAttempt time.Time // start of the latest fetch; zero before the first
	jwksURI     string    // from the metadata; cleared when a fetch fails so the next one rediscovers
	lastErr     error     // outcome of the latest fetch
	flight      *flight   // the fetch in progress, if any
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
		now:         opts.Now,
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

// startLocked returns the fetch in progress, or starts one unless the previous one began less than
// MinRefresh ago (force skips that limit). It returns nil when no fetch may run.
func (r *RemoteKeys) startLocked(now time.Time, force bool) *flight {
	if r.flight != nil {
		return r.flight
	}
	if !force && !r.lastAttempt.IsZero() && now.Sub(r.lastAttempt) < r.minRefresh {
		return nil
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
	if err != nil {
		r.jwksURI = ""
	} else {
		r.keys = set
		r.expires = r.now().Add(maxAge)
		r.jwksURI = jwksURI
	}
	r.lastErr = err
	f.err = err
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
		return "", fmt.Errorf("mandate: parsing metadata of %s: %w", r.issuer, err)
	}
	if meta.Issuer != r.issuer {
		return "", fmt.Errorf("mandate: metadata at %s names issuer %q, want %q", r.metadataURL, meta.Issuer, r.issuer)
	}
	if _, err := checkFetchURL(meta.JWKSURI); err != nil {
		return "", fmt.Errorf("mandate: metadata of %s: jwks_uri: %w", r.issuer, err)
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
		return nil, 0, fmt.Errorf("mandate: key set of %s: %w", r.issuer, err)
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
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s answered status %d", uri, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, r.maxBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", uri, err)
	}
	if int64(len(body)) > r.maxBytes {
		return nil, nil, fmt.Errorf("%s is larger than %d bytes", uri, r.maxBytes)
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
