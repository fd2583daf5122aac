package sts

import (
	"errors"
	"fmt"
)

// Validate checks the configuration (after Provision took the defaults of the caracal
// global option). The STS core checks what it owns (identifier syntax, lifetimes, the
// key-encryption key's form) and the storage its driver and dsn when Provision builds
// them.
func (a *App) Validate() error {
	if a.BaseURL == "" {
		return errors.New("base_url is required (the external URL zone issuers are built from)")
	}
	if a.KeyEncryptionKey == "" && a.persistent() {
		return errors.New("key_encryption_key is required with persistent storage (32 bytes, base64 or hex)")
	}
	p := a.Policy
	for name, v := range map[string]int{"max_bundle_bytes": p.MaxBundleBytes, "max_modules": p.MaxModules, "max_rules": p.MaxRules, "max_compilations": p.MaxCompilations} {
		if v < 0 {
			return fmt.Errorf("policy %s must be positive, not %d", name, v)
		}
	}
	if p.Timeout < 0 || p.CompileTimeout < 0 {
		return errors.New("policy timeouts must be positive")
	}
	if a.Revocation.Retention < 0 {
		return errors.New("revocation retention must not be negative")
	}
	ids := map[string]bool{}
	for _, z := range a.Zones {
		if err := z.validate(); err != nil {
			return fmt.Errorf("zone %q: %w", z.ID, err)
		}
		if ids[z.ID] {
			return fmt.Errorf("zone %s is declared twice", z.ID)
		}
		ids[z.ID] = true
	}
	return nil
}

// persistent reports whether the storage outlives the process.
func (a *App) persistent() bool {
	return a.Storage.Driver != "" && a.Storage.Driver != "memory"
}

// validate checks what only the configuration knows about a zone; Provision checks the
// zone id, applications, resources and policy bundle as the STS would store them.
func (z ZoneConfig) validate() error {
	for _, g := range z.Grants {
		if g.ClientID == "" || g.Resource == "" || len(g.Scopes) == 0 {
			return errors.New("a grant needs a client_id, a resource and at least one scope")
		}
	}
	if len(z.Grants) > 0 && z.Policy == "" {
		return errors.New("grants need a policy (e.g. policy default)")
	}
	return nil
}
