package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caracalgw/caracal/internal/testenv"
)

const adminToken = "e2e-admin-token-0123456789"

// coordinatorCaddyfile is one process serving the STS, the Coordinator and the demo API
// of zone demo (applications orchestrator, worker and helper; only the orchestrator has a
// grant), with the given storage and revocation lines.
func coordinatorCaddyfile(t testing.TB, storage, base string) func(port, admin int) string {
	demo := freePort(t)
	return func(port, admin int) string {
		if base == "" {
			base = fmt.Sprintf("https://localhost:%d", port)
		}
		return fmt.Sprintf(`{
	admin 127.0.0.1:%[2]d
	default_bind 127.0.0.1
	skip_install_trust
	auto_https disable_redirects
	caracal_sts {
		base_url %[3]s
		%[4]s
		key_encryption_key %[5]s
		zone demo {
			application orchestrator orchestrator-secret
			application worker worker-secret
			application helper helper-secret
			resource %[3]s/api read write
			policy default
			grant orchestrator %[3]s/api read write
		}
	}
	caracal_coordinator {
		bootstrap_token %[6]s
	}
}

https://localhost:%[1]d {
	tls internal
	caracal_sts
	caracal_coordinator
	handle /api/* {
		caracal_mandate {
			issuer %[3]s/zones/demo
			resource %[3]s/api
			scopes read
		}
		reverse_proxy 127.0.0.1:%[7]d {
			flush_interval -1
		}
	}
}

http://:%[7]d {
	caracal_demo_upstream
}
`, port, admin, base, storage, testKEK, adminToken, demo)
	}
}

// adminCall sends a JSON request to the admin API with bearer (an admin token or a
// session mandate) and decodes the answer into out (when not nil).
func (in *instance) adminCall(t testing.TB, method, path, bearer string, body any, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, in.url(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, raw := in.do(t, req)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %q is not JSON: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

type edge struct {
	ID     string `json:"id"`
	Epoch  int64  `json:"epoch"`
	Status string `json:"status"`
	// target is the index of the target session in the test's list (not on the wire).
	target int
}

// delegate creates an edge from the session of bearer to target under parent.
func (in *instance) delegate(t testing.TB, bearer, target, resource, parent string, maxHops int) (edge, int) {
	t.Helper()
	body := map[string]any{"target_session_id": claimsOf(t, target).SID, "resource": resource, "scopes": []string{"read"}, "ttl_seconds": 600, "max_hops": maxHops}
	if parent != "" {
		body["parent_edge_id"] = parent
	}
	var e edge
	code := in.adminCall(t, http.MethodPost, "/v1/zones/demo/delegations", bearer, body, &e)
	return e, code
}

// TestDelegationChainThroughCaddy: an orchestrator delegates read on the demo resource to
// a worker (hop 1), the worker passes it on to a helper (hop 2), the helper's mandate
// passes the gateway; revoking the first edge cuts a stream the helper is reading and
// refuses its next call.
func TestDelegationChainThroughCaddy(t *testing.T) {
	in := start(t, coordinatorCaddyfile(t, "storage memory", ""))
	resource := in.url("/api")
	orch := in.session(t, "demo", "orchestrator", "orchestrator-secret")
	worker := in.session(t, "demo", "worker", "worker-secret")
	helper := in.session(t, "demo", "helper", "helper-secret")

	e1, code := in.delegate(t, orch, worker, resource, "", 2)
	if code != http.StatusCreated {
		t.Fatalf("hop 1: %d", code)
	}
	e2, code := in.delegate(t, worker, helper, resource, e1.ID, 1)
	if code != http.StatusCreated || e2.Epoch <= e1.Epoch {
		t.Fatalf("hop 2: %d, epochs %d then %d", code, e1.Epoch, e2.Epoch)
	}
	// Nobody can delegate in someone else's name: the helper cannot extend the worker's edge.
	if _, code := in.delegate(t, helper, orch, resource, e1.ID, 1); code != http.StatusBadRequest && code != http.StatusForbidden {
		t.Fatalf("a delegation from a session that is not the parent's target: %d", code)
	}

	form := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {helper},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"resource":           {resource},
		"delegation_edge_id": {e2.ID},
	}
	resp, body := in.postForm(t, "/zones/demo/oauth2/token", form.Encode())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("delegated exchange: %d %s", resp.StatusCode, body)
	}
	mandate := accessToken(t, body)
	if c := claimsOf(t, mandate); c.Subject != "orchestrator" || c.ClientID != "helper" || c.Scope != "read" {
		t.Fatalf("delegated mandate claims %+v", c)
	}

	client := in.newClient(t, false, 4)
	if resp, body := in.call(t, client, "/api/hello", mandate); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"sub":"orchestrator"`) {
		t.Fatalf("call with the delegated mandate: %d %s", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := in.open(t, ctx, client, "/api/stream?bytes=200000000&delay_ms=10", mandate)
	defer stream.Body.Close()
	testenv.ReadUntil(t, stream.Body, 256<<10)

	var rev struct {
		RevokedEdges []string `json:"revoked_edges"`
		Epoch        int64    `json:"epoch"`
	}
	if code := in.adminCall(t, http.MethodPost, "/v1/zones/demo/delegations/"+e1.ID+"/revoke", orch, nil, &rev); code != http.StatusOK || len(rev.RevokedEdges) != 2 || rev.Epoch <= e2.Epoch {
		t.Fatalf("revoking hop 1: %d %+v", code, rev)
	}
	_, err := testenv.BodyEnd(t, stream.Body)
	testenv.AssertAborted(t, err, false)
	if resp, _ := in.call(t, client, "/api/hello", mandate); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("call after the revocation: %d", resp.StatusCode)
	}
	if resp, body := in.postForm(t, "/zones/demo/oauth2/token", form.Encode()); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("exchange after the revocation: %d %s", resp.StatusCode, body)
	}
}

// TestConcurrentDelegationWritersInTwoProcesses runs parallel edge creations and
// revocations in one zone from two caracal processes sharing PostgreSQL: every change
// gets its own epoch, the zone's epoch ends at the highest, and no edge is left active
// under a revoked parent.
func TestConcurrentDelegationWritersInTwoProcesses(t *testing.T) {
	storage := postgresStorage(t)
	a := start(t, coordinatorCaddyfile(t, storage, ""))
	base := a.url("")
	b := start(t, coordinatorCaddyfile(t, storage, base))
	resource := base + "/api"
	procs := []*instance{a, b}

	var sessions []string
	for i := range 8 {
		client := []string{"orchestrator", "worker", "helper"}[i%3]
		sessions = append(sessions, procs[i%2].session(t, "demo", client, client+"-secret"))
	}

	var (
		mu       sync.Mutex
		edges    []edge
		children int
		epochs   = map[int64]string{}
	)
	record := func(what string, epoch int64) {
		mu.Lock()
		defer mu.Unlock()
		if prev, dup := epochs[epoch]; dup {
			t.Errorf("epoch %d given to both %s and %s", epoch, prev, what)
		}
		epochs[epoch] = what
	}
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			in := procs[w%2]
			for i := range 15 {
				mu.Lock()
				var parent edge
				if len(edges) > 0 && rng.IntN(2) == 0 {
					parent = edges[rng.IntN(len(edges))]
				}
				mu.Unlock()
				if parent.ID != "" && rng.IntN(3) == 0 {
					var rev struct {
						RevokedEdges []string `json:"revoked_edges"`
						Epoch        int64    `json:"epoch"`
					}
					code := in.adminCall(t, http.MethodPost, "/v1/zones/demo/delegations/"+parent.ID+"/revoke", adminToken, nil, &rev)
					if code != http.StatusOK {
						t.Errorf("revoke: %d", code)
					} else if len(rev.RevokedEdges) > 0 {
						record(fmt.Sprintf("revoke %s (worker %d, %d)", parent.ID, w, i), rev.Epoch)
					}
					continue
				}
				src, dst := rng.IntN(len(sessions)), rng.IntN(len(sessions))
				if dst == src {
					dst = (dst + 1) % len(sessions)
				}
				parentID, hops := "", 3
				if parent.ID != "" {
					// Extend the parent from its target's session.
					src, parentID, hops = parent.target, parent.ID, 1
					if dst == src {
						dst = (dst + 1) % len(sessions)
					}
				}
				e, code := in.delegate(t, sessions[src], sessions[dst], resource, parentID, hops)
				switch code {
				case http.StatusCreated:
					record(fmt.Sprintf("create %s (worker %d, %d)", e.ID, w, i), e.Epoch)
					e.target = dst
					mu.Lock()
					edges = append(edges, e)
					if parentID != "" {
						children++
					}
					mu.Unlock()
				case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusConflict:
					// A rule refused it (wrong source for the parent, revoked parent, …).
				default:
					t.Errorf("create: %d", code)
				}
			}
		})
	}
	wg.Wait()
	if len(edges) < 10 || children < 3 {
		t.Fatalf("only %d edges (%d with a parent) were created; the test exercised too little", len(edges), children)
	}

	var top int64
	for e := range epochs {
		top = max(top, e)
	}
	var cur struct {
		Epoch int64 `json:"epoch"`
	}
	if code := b.adminCall(t, http.MethodGet, "/v1/zones/demo/epoch", adminToken, nil, &cur); code != http.StatusOK || cur.Epoch != top {
		t.Fatalf("zone epoch %d (%d), highest epoch handed out %d", cur.Epoch, code, top)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.TrimPrefix(storage, "storage postgres "))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var orphans int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM delegation_edges c JOIN delegation_edges p
		ON p.zone_id = c.zone_id AND p.id = c.parent_edge_id
		WHERE c.status = 'active' AND p.status <> 'active'`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Fatalf("%d active edges under a revoked parent", orphans)
	}
}
