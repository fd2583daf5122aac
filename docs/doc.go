// Package docs holds no code: its directory carries the security pages (threat model,
// hardening checklist) and the tests that keep them in step with the code.
package docs
