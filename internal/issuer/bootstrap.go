package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"

	"github.com/caracalgw/caracal/internal/policy"
	"github.com/caracalgw/caracal/internal/secret"
	"github.com/caracalgw/caracal/internal/store"
	"github.com/caracalgw/caracal/mandate"
)

// ZoneSpec declares a zone and its contents; Bootstrap creates or updates it so a
// configuration file alone can run a deployment.
type ZoneSpec struct {
	ID           string
	Name         string
	Applications []ApplicationSpec
	Resources    []ResourceSpec
	// Policy, when set, becomes the active bundle unless the active one is identical.
	Policy *PolicySpec
}

// ApplicationSpec declares an application with its clear secret (from a placeholder).
type ApplicationSpec struct {
	ClientID string
	Name     string
	Secret   string
}

// ResourceSpec declares a resource.
type ResourceSpec struct {
	Identifier string
	Scopes     []string
}

// PolicySpec is a policy bundle.
type PolicySpec struct {
	Modules map[string]string
	Data    json.RawMessage
	// Compiled, when set, is Modules and Data as CompilePolicy compiled them (the STS
	// does so when it checks its configuration); Bootstrap installs it instead of
	// compiling the bundle a second time.
	Compiled *policy.Compiled
}

// Bootstrap creates or updates the declared zones. It is idempotent: an unchanged
// declaration changes nothing in storage.
func (s *Service) Bootstrap(ctx context.Context, zones []ZoneSpec) error {
	for _, z := range zones {
		if err := s.bootstrapZone(ctx, z); err != nil {
			return fmt.Errorf("zone %s: %w", z.ID, err)
		}
		s.Invalidate(z.ID)
	}
	return nil
}

func (s *Service) bootstrapZone(ctx context.Context, z ZoneSpec) error {
	if _, err := s.store.GetZone(ctx, z.ID); errors.Is(err, store.ErrNotFound) {
		if err := s.CreateZone(ctx, z.ID, z.Name); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	} else if err != nil {
		return err
	}
	now := s.now()
	for _, a := range z.Applications {
		if a.ClientID == "" || a.Secret == "" {
			return fmt.Errorf("application %q needs a client id and a secret", a.ClientID)
		}
		existing, err := s.store.GetApplication(ctx, z.ID, a.ClientID)
		if err == nil && existing.Name == a.Name && !existing.Disabled {
			// Keep the stored hash when the declared secret still matches it.
			if ok, _ := secret.Check(existing.SecretHash, a.Secret); ok {
				continue
			}
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		hash, err := secret.Hash(a.Secret)
		if err != nil {
			return fmt.Errorf("hashing secret of %s: %w", a.ClientID, err)
		}
		if err := s.store.PutApplication(ctx, store.Application{ZoneID: z.ID, ClientID: a.ClientID, Name: a.Name, SecretHash: hash, CreatedAt: now}); err != nil {
			return fmt.Errorf("application %s: %w", a.ClientID, err)
		}
	}
	for _, r := range z.Resources {
		if err := ValidateResource(r.Identifier, r.Scopes); err != nil {
			return err
		}
		if err := s.store.PutResource(ctx, store.Resource{ZoneID: z.ID, ID: store.NewID(store.ResourceIDPrefix), Identifier: r.Identifier, Scopes: r.Scopes, CreatedAt: now}); err != nil {
			return fmt.Errorf("resource %s: %w", r.Identifier, err)
		}
	}
	if z.Policy != nil {
		compiled := z.Policy.Compiled
		if compiled == nil {
			var err error
			if compiled, err = s.CompilePolicy(ctx, z.ID, z.Policy.Modules, z.Policy.Data); err != nil {
				return fmt.Errorf("policy bundle: %w", err)
			}
		}
		active, err := s.store.ActivePolicyBundle(ctx, z.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err != nil || !maps.Equal(active.Modules, z.Policy.Modules) || !jsonEqual(active.Data, z.Policy.Data) {
			if active, err = s.store.PutPolicyBundle(ctx, z.ID, z.Policy.Modules, z.Policy.Data, now); err != nil {
				return fmt.Errorf("storing policy bundle: %w", err)
			}
		}
		// Compiled here, at start, so the zone's first exchange does not wait for it.
		s.InstallPolicy(z.ID, active.Version, compiled)
	}
	return nil
}

// ValidateResource checks an identifier (absolute URI, no fragment) and its scopes
// (non-empty, no duplicates, RFC 6749 scope-token characters).
func ValidateResource(identifier string, scopes []string) error {
	u, err := url.Parse(identifier)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || u.RawFragment != "" {
		return fmt.Errorf("resource identifier %q must be an absolute URI without a fragment", identifier)
	}
	if len(scopes) == 0 {
		return fmt.Errorf("resource %s declares no scopes", identifier)
	}
	for i, sc := range scopes {
		if !mandate.ValidScopeToken(sc) {
			return fmt.Errorf("resource %s: scope %q is not a valid scope token", identifier, sc)
		}
		if slices.Contains(scopes[:i], sc) {
			return fmt.Errorf("resource %s: scope %q is declared twice", identifier, sc)
		}
	}
	return nil
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
