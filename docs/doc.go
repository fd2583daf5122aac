// Package docs holds no code: its directory carries the reference pages (protocol,
// configuration, architecture, security) and the tests that keep them in step with the
// code and with each other (cited tests exist, hardening checks are named, links resolve).
package docs
