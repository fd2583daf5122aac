package verify

import (
	"context"
	"net/http"

	"github.com/caracalgw/caracal/mandate"
)

type claimsKey struct{}

// ClaimsFromContext returns the verified claims that Middleware stored.
func ClaimsFromContext(ctx context.Context) (*mandate.Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*mandate.Claims)
	return c, ok
}

// Middleware protects next: a request passes only with a valid, unrevoked resource
// mandate carrying the required scopes; its claims are in the request context.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := BearerToken(r)
		if err != nil {
			WriteError(w, v.opts.Realm, err)
			return
		}
		c, err := v.Verify(r.Context(), token)
		if err != nil {
			WriteError(w, v.opts.Realm, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
	})
}
