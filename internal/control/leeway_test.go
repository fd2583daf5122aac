package control

import (
	"net/http"
	"testing"
	"time"

	"github.com/caracalgw/caracal/internal/store/memory"
)

// TestSessionMandateLeeway: the Coordinator checks a session mandate's times with the
// leeway it is configured with (the STS's), not a fixed default. Its clock runs 45 s
// behind the STS's, so the mandate's iat and nbf lie 45 s in its future.
func TestSessionMandateLeeway(t *testing.T) {
	for _, c := range []struct {
		leeway time.Duration
		want   int
	}{
		{0, http.StatusUnauthorized}, // mandate.DefaultLeeway, 30 s
		{time.Minute, http.StatusCreated},
	} {
		t.Run(c.leeway.String(), func(t *testing.T) {
			g := newGraph(t, memory.New())
			behind := func() time.Time { return g.clock.Now().Add(-45 * time.Second) }
			svc, err := New(Options{Store: g.st, STS: g.sts, BootstrapToken: bootstrapToken, Leeway: c.leeway, Now: behind})
			if err != nil {
				t.Fatal(err)
			}
			g.svc = svc
			if rec := g.delegate(g.zone, g.tok["alice"], g.edgeBody("bob")); rec.Code != c.want {
				t.Fatalf("delegation with leeway %v: %d %s, want %d", c.leeway, rec.Code, rec.Body, c.want)
			}
		})
	}
}
