// Command resource-server is a plain net/http API protected by Caracal mandates with the
// verify package: GET /hello answers only a resource mandate of the configured zone, made
// out to this resource, carrying the required scopes and not revoked, and GET /events
// streams server-sent events under the response guard, which ends the stream as soon as
// its mandate is revoked or expires.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caracalgw/caracal/mandate"
	"github.com/caracalgw/caracal/revocation"
	"github.com/caracalgw/caracal/verify"
)

// config is what the flags and their environment variables set.
type config struct {
	issuer, resource, scopes, listen, ca string
	redisURL, streamKey, streamPrefix    string
}

func main() {
	var c config
	str := func(p *string, name, env, def, usage string) {
		if v := os.Getenv(env); v != "" {
			def = v
		}
		flag.StringVar(p, name, def, usage+" (env "+env+")")
	}
	str(&c.issuer, "issuer", "CARACAL_ISSUER", "https://localhost:8443/zones/demo", "zone issuer URL")
	str(&c.resource, "resource", "CARACAL_RESOURCE", "https://localhost:8443/api", "this resource's identifier (the mandates' aud)")
	str(&c.scopes, "scope", "CARACAL_SCOPE", "read", "required scopes, space-separated")
	str(&c.listen, "listen", "LISTEN_ADDR", "127.0.0.1:9090", "listen address")
	str(&c.ca, "ca", "CARACAL_CA_FILE", "", "PEM root certificate to trust for the issuer, besides the system roots")
	str(&c.redisURL, "redis", "CARACAL_REDIS_URL", "", "Redis URL of the revocation streams; empty: no revocation feed")
	str(&c.streamKey, "stream-key", "CARACAL_STREAM_KEY", "", "HMAC key of the revocation streams")
	str(&c.streamPrefix, "stream-prefix", "CARACAL_STREAM_PREFIX", "", "prefix of the Redis stream names")
	flag.Parse()

	h, _, err := newHandler(context.Background(), c)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("serving %s on http://%s/hello, mandates of %s", c.resource, c.listen, c.issuer)
	srv := &http.Server{Addr: c.listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// newHandler builds the API and its verifier. closeFeed stops the revocation feed.
func newHandler(ctx context.Context, c config) (h http.Handler, closeFeed func(), err error) {
	opts := mandate.RemoteOptions{Issuer: c.issuer}
	if c.ca != "" {
		if opts.Client, err = clientTrusting(c.ca); err != nil {
			return nil, nil, err
		}
	}
	keys, err := mandate.NewRemoteKeys(opts)
	if err != nil {
		return nil, nil, err
	}
	// Fetch the zone's keys now, so that a wrong issuer or CA shows at start-up.
	if err := keys.Refresh(ctx); err != nil {
		return nil, nil, err
	}
	vo := verify.Options{Issuer: c.issuer, Resource: c.resource, Scopes: strings.Fields(c.scopes),
		Keys: keys, Revocations: revocation.NewRevokedSet(nil), Epochs: new(revocation.Epochs)}
	closeFeed = func() {}
	// Without Redis the RevokedSet has no Source: it only learns of revocations published in
	// this very process, and this program publishes none, so a revoked mandate keeps
	// working here until it expires. Give it the Redis streams the STS publishes to.
	if c.redisURL != "" {
		ro, err := redis.ParseURL(c.redisURL)
		if err != nil {
			return nil, nil, fmt.Errorf("parsing the Redis URL: %w", err)
		}
		rdb := redis.NewClient(ro)
		feed, err := revocation.NewRedisRevocationConsumer(ctx, vo.Revocations, vo.Epochs, revocation.RedisOptions{
			Client: rdb, Key: []byte(c.streamKey), StreamPrefix: c.streamPrefix})
		if err != nil {
			rdb.Close()
			return nil, nil, fmt.Errorf("starting the revocation feed: %w", err)
		}
		closeFeed = func() { feed.Close(); rdb.Close() }
		// Serve only once every retained revocation is loaded.
		select {
		case <-feed.Ready():
		case <-time.After(30 * time.Second):
			closeFeed()
			return nil, nil, fmt.Errorf("the revocation streams at %s were not readable within 30s", ro.Addr)
		}
		vo.Source = feed
	}
	v, err := verify.New(vo)
	if err != nil {
		closeFeed()
		return nil, nil, err
	}
	guard, err := verify.NewGuard(v, verify.GuardOptions{})
	if err != nil {
		closeFeed()
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /hello", v.Middleware(guard.Middleware(http.HandlerFunc(hello))))
	mux.Handle("GET /events", v.Middleware(guard.Middleware(events(eventEvery))))
	return mux, closeFeed, nil
}

// eventEvery is how often /events sends an event.
const eventEvery = 5 * time.Second

// events streams a "tick" server-sent event every interval, after a first one at once,
// until the client leaves or the guard ends the response (its request context is then
// cancelled).
func events(every time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, _ := verify.ClaimsFromContext(r.Context())
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		rc := http.NewResponseController(w)
		t := time.NewTicker(every)
		defer t.Stop()
		for n := 0; ; n++ {
			data, err := json.Marshal(map[string]any{"sub": c.Subject, "n": n})
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(w, "event: tick\ndata: %s\n\n", data); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
	}
}

// hello tells the caller who the mandate says it is.
func hello(w http.ResponseWriter, r *http.Request) {
	c, _ := verify.ClaimsFromContext(r.Context())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"sub": c.Subject, "client_id": c.ClientID, "scope": c.Scope})
}

// clientTrusting returns an HTTP client that also trusts the PEM roots in file (the demo
// runs on Caddy's internal CA) and, like RemoteKeys' default client, follows no redirect.
func clientTrusting(file string) (*http.Client, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the CA file: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", file)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}
