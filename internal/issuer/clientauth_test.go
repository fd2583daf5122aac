package issuer

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caracalgw/caracal/internal/secret"
	"github.com/caracalgw/caracal/internal/testenv"
)

// authEnv is an STS whose verifier counts Argon2 runs and whose log is observed. Dummy checks cost
// what the test hashes cost, so that a race-enabled flood stays cheap; the counts are the same.
func authEnv(t *testing.T, opts ...envOption) (*env, *secret.Verifier, *observer.ObservedLogs) {
	t.Helper()
	v, err := secret.NewVerifier(secret.VerifierOptions{MaxConcurrent: 2, MaxPerKey: 64, MaxWait: time.Minute, DummyHash: testenv.CheapSecretHash("dummy")})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	opts = append([]envOption{func(o *Options) {
		o.Secrets = v
		o.Logger = zap.New(core)
	}}, opts...)
	return newEnv(t, nil, opts...), v, logs
}

// auth is a client_credentials request with Basic credentials from the given source address.
func (e *env) auth(zone, client, secret, source string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, testBase+"/zones/"+zone+"/oauth2/token", strings.NewReader(url.Values{"grant_type": {GrantClientCreds}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(client), url.QueryEscape(secret))
	req.RemoteAddr = source + ":40000"
	rec := httptest.NewRecorder()
	e.svc.ServeHTTP(rec, req)
	return rec
}

// flood sends n concurrent requests, released together, and counts the answers by status.
func flood(n int, send func(i int) *httptest.ResponseRecorder) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			rec := send(i)
			mu.Lock()
			codes[rec.Code]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return codes
}

func lockouts(logs *observer.ObservedLogs) []observer.LoggedEntry {
	return logs.FilterMessage("client authentication locked out").AllUntimed()
}

func TestConcurrentWrongSecretsRunArgon2AtMostTheLimit(t *testing.T) {
	e, v, logs := authEnv(t)
	codes := flood(32, func(i int) *httptest.ResponseRecorder {
		return e.auth("demo", "agent", "wrong-"+strconv.Itoa(i), "203.0.113.9")
	})
	runs := v.Runs()
	if runs != DefaultFailureLimit {
		t.Fatalf("32 concurrent wrong secrets ran Argon2 %d times, limit %d", runs, DefaultFailureLimit)
	}
	if codes[http.StatusUnauthorized] != int(runs) || codes[http.StatusTooManyRequests] != 32-int(runs) {
		t.Fatalf("answers %v for %d runs: every run is one 401, every other attempt a 429", codes, runs)
	}
	// Sent again one by one, they still run nothing.
	for i := range 5 {
		oauthErr(t, e.auth("demo", "agent", "again-"+strconv.Itoa(i), "203.0.113.9"), http.StatusTooManyRequests, CodeSlowDown)
	}
	if v.Runs() != runs {
		t.Fatalf("a locked-out pair ran Argon2 again (%d -> %d)", runs, v.Runs())
	}
	if len(lockouts(logs)) != 1 {
		t.Fatalf("%d lockout lines, want 1", len(lockouts(logs)))
	}
}

func TestUnknownClientFloodIsThrottledPerSource(t *testing.T) {
	e, v, logs := authEnv(t)
	const attacker = "198.51.100.7"
	codes := flood(32, func(i int) *httptest.ResponseRecorder {
		return e.auth("demo", "ghost-"+strconv.Itoa(i), "guess", attacker)
	})
	limit := 4 * DefaultFailureLimit
	runs := v.Runs()
	if runs != uint64(limit) || codes[http.StatusUnauthorized] != int(runs) || codes[http.StatusTooManyRequests] != 32-int(runs) {
		t.Fatalf("32 unknown ids from one source: %d Argon2 runs, answers %v; limit %d", runs, codes, limit)
	}
	// The source is locked out in this zone, for every id, so the answer tells nothing about which
	// ids exist; it costs no Argon2.
	if body := oauthErr(t, e.auth("demo", "ghost-x", "guess", attacker), http.StatusTooManyRequests, CodeSlowDown); body["error_description"] != lockoutReasons[scopeSource] {
		t.Fatalf("refusal of a locked-out source says %q", body["error_description"])
	}
	oauthErr(t, e.auth("demo", "agent", "wrong", attacker), http.StatusTooManyRequests, CodeSlowDown)
	if v.Runs() != runs {
		t.Fatalf("a locked-out source ran Argon2 (%d -> %d)", runs, v.Runs())
	}
	// Another source in the same zone, and the same source in another zone, are unaffected.
	if rec := e.auth("demo", "agent", "demo-agent-secret", "192.0.2.50"); rec.Code != http.StatusOK {
		t.Fatalf("legitimate client from another source: %d %s", rec.Code, rec.Body)
	}
	oauthErr(t, e.auth("demo", "ghost-1", "guess", "192.0.2.50"), http.StatusUnauthorized, CodeInvalidClient)
	if rec := e.auth("other", "agent", "other-agent-secret", attacker); rec.Code != http.StatusOK {
		t.Fatalf("same source in another zone: %d %s", rec.Code, rec.Body)
	}
	var sourceLocks int
	for _, l := range lockouts(logs) {
		if l.ContextMap()["scope"] == scopeSource && l.ContextMap()["source"] == attacker && l.ContextMap()["zone"] == "demo" {
			sourceLocks++
		}
	}
	if sourceLocks != 1 {
		t.Fatalf("%d source lockout lines, want 1: %v", sourceLocks, lockouts(logs))
	}
}

func TestAttackerCannotLockOutTheRealClient(t *testing.T) {
	const attacker, real = "198.51.100.66", "192.0.2.10"
	t.Run("per source", func(t *testing.T) {
		e, v, logs := authEnv(t)
		for i := range DefaultFailureLimit {
			oauthErr(t, e.auth("demo", "agent", "wrong-"+strconv.Itoa(i), attacker), http.StatusUnauthorized, CodeInvalidClient)
		}
		// The attacker is locked out, even with the right secret, without any Argon2 work.
		runs := v.Runs()
		rec := e.auth("demo", "agent", "demo-agent-secret", attacker)
		oauthErr(t, rec, http.StatusTooManyRequests, CodeSlowDown)
		if rec.Header().Get("Retry-After") == "" || v.Runs() != runs {
			t.Fatalf("lockout: Retry-After %q, runs %d -> %d", rec.Header().Get("Retry-After"), runs, v.Runs())
		}
		// The real client, first time, from its own address.
		if rec := e.auth("demo", "agent", "demo-agent-secret", real); rec.Code != http.StatusOK {
			t.Fatalf("real client after 5 wrong secrets from an attacker: %d %s", rec.Code, rec.Body)
		}
		got := lockouts(logs)
		if len(got) != 1 {
			t.Fatalf("%d lockout lines, want 1", len(got))
		}
		l := got[0]
		want := map[string]any{"zone": "demo", "client_id": "agent", "source": attacker, "scope": scopeClientSource}
		for k, w := range want {
			if l.ContextMap()[k] != w {
				t.Fatalf("lockout line %s = %v, want %v (%v)", k, l.ContextMap()[k], w, l.ContextMap())
			}
		}
		if l.Level != zapcore.InfoLevel {
			t.Fatalf("lockout logged at %s", l.Level)
		}
		for _, entry := range logs.AllUntimed() {
			for k, val := range entry.ContextMap() {
				if s, ok := val.(string); ok && (strings.Contains(s, "wrong-") || strings.Contains(s, "agent-secret")) {
					t.Fatalf("log %q field %s holds a secret: %q", entry.Message, k, s)
				}
			}
		}
	})
	t.Run("global threshold", func(t *testing.T) {
		e, _, logs := authEnv(t, func(o *Options) { o.FailureLimit, o.ClientFailureLimit = 2, 4 })
		// reader authenticates before the attack; its verified secret is remembered.
		if rec := e.auth("demo", "reader", "demo-reader-secret", real); rec.Code != http.StatusOK {
			t.Fatal(rec.Code)
		}
		for client, sources := range map[string][]string{"agent": {"198.51.100.1", "198.51.100.2"}, "reader": {"198.51.100.4", "198.51.100.5"}} {
			for _, src := range sources {
				for i := range 2 {
					oauthErr(t, e.auth("demo", client, "wrong-"+strconv.Itoa(i), src), http.StatusUnauthorized, CodeInvalidClient)
				}
			}
		}
		// Four failures from two sources reach the client-wide limit: a first verification from a
		// new source is refused...
		if body := oauthErr(t, e.auth("demo", "agent", "demo-agent-secret", "198.51.100.3"), http.StatusTooManyRequests, CodeSlowDown); body["error_description"] != lockoutReasons[scopeClient] {
			t.Fatalf("refusal of a locked-out client says %q", body["error_description"])
		}
		// ...but a secret verified before is still accepted, and other zones are unaffected.
		if rec := e.auth("demo", "reader", "demo-reader-secret", "198.51.100.3"); rec.Code != http.StatusOK {
			t.Fatalf("recently verified client during a global lockout: %d %s", rec.Code, rec.Body)
		}
		if rec := e.auth("other", "agent", "other-agent-secret", "198.51.100.3"); rec.Code != http.StatusOK {
			t.Fatalf("same client id in another zone: %d %s", rec.Code, rec.Body)
		}
		scopes := map[string]int{}
		for _, l := range lockouts(logs) {
			scopes[l.ContextMap()["scope"].(string)]++
		}
		if scopes[scopeClientSource] != 4 || scopes[scopeClient] != 2 || scopes[scopeSource] != 0 {
			t.Fatalf("lockout lines by scope %v, want 4 client_source and 2 client", scopes)
		}
		// The window ends and the client may try again from anywhere.
		e.clock.Advance(DefaultFailureWindow)
		if rec := e.auth("demo", "agent", "demo-agent-secret", "198.51.100.3"); rec.Code != http.StatusOK {
			t.Fatalf("after the window: %d %s", rec.Code, rec.Body)
		}
	})
}
